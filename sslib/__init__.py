"""sslib: Spatial Structure Constraints for weakly supervised semantic segmentation.

A thin library behind the notebooks: data sets (VOC 2012, COCO 2014, a synthetic
"context" set), superpixels, metrics, and (later) the CAM network and losses.
"""
__version__ = "0.1.0"
