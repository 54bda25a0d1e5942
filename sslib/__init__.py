"""sslib: Spatial Structure Constraints for weakly supervised semantic segmentation.

The library behind the notebooks and DVC stages. Library modules are nouns (data,
superpixels, models, losses, cam, evaluate, metrics, ablation, viz, training); they know
neither params.yaml's file nor output paths. The pipeline's stages are verbs, one module
each under :mod:`sslib.stages`, in the order dvc.yaml runs them; they read params
(:mod:`sslib.config`), call the library and write through :mod:`sslib.paths`.
"""
__version__ = "0.1.0"
