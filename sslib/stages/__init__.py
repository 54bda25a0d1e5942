"""The pipeline's stages, one module each, in the order ``dvc.yaml`` runs them.

A stage module is a verb. It has ``run(params, ...)``, which reads its params sections,
calls the library and writes through :mod:`sslib.paths`, and ``main()`` for the shell
(``python -m sslib.stages.<stage>``). Its notebook (``notebooks/NN_<stage>.py``) has a
tagged ``parameters`` cell, calls ``run`` and draws the figures. The same names, in the
same order, appear in ``dvc.yaml``, ``notebooks/`` and here (tests/test_layout.py).

==================  ========================  ==================================================
stage               notebook                  what it makes
==================  ========================  ==================================================
resolve             (none: a module)          each run's settings and each stage's code fingerprint
synthesize          00_synthesize             the synthetic scene set (VOC layout)
prepare             (none: a module)          image labels, split lists, SegmentationClassAug
superpixels         01_superpixels            superpixel maps of every image
data_report         02_data_report            sample figure, data statistics
train_cam           10_train_cam              a CAM network per variant and seed
eval_cam            11_eval_cam               its multi-scale CAMs and their threshold sweep
inspect_cams        19_inspect_cams           CAMs, reconstructions, alignment targets
make_ir_labels      20_make_ir_labels         IRN's IR labels per downstream run, their quality
train_irn           21_train_irn              IRN's boundary network per downstream run
make_pseudo_labels  22_make_pseudo_labels     random-walk pseudo labels, confidence masks, quality
pseudo_label_table  29_pseudo_label_table     CAM -> pseudo-label table over the downstream runs
train_seg           30_train_seg              DeepLabV2 (or BECO's pair) per downstream run
eval_seg            31_eval_seg               multi-scale + CRF predictions on val, their mIoU
paper_table         39_paper_table            CAM / pseudo-label / segmentation table, figure
ablation            50_ablation               the ablation table, curves and figures
==================  ========================  ==================================================
"""
from .registry import DOWNSTREAM, PER_RUN, STAGES  # the stages as data (sslib/stages/registry.py)

__all__ = ["STAGES", "PER_RUN", "DOWNSTREAM"]
