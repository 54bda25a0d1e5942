# %% [markdown]
# # Train the segmentation network (one downstream run)
#
# DeepLabV2 (the sum of four dilated 3x3 convolutions on a dilated backbone, `train_seg.backbone`
# with ImageNet weights) on one downstream run's pseudo labels (the `make_pseudo_labels`
# stage). `train_seg.method: ce`: cross-entropy, only inside BECO's confidence mask with
# `methods.ce.confidence: true`; `beco`: BECO's two co-trained networks (ClassMix, online labels, the
# boundary band, cross supervision on the unconfident pixels). The `train_seg` stage runs
# this notebook once per variant and seed of `runs.downstream`; see
# `sslib/stages/train_seg.py`, `sslib/beco.py` and `sslib/training.py` (the loop it shares
# with `train_cam` and `train_irn`).

# %% tags=["parameters"]
params_path = "params.yaml"  # relative to the project root
variant = "ssc"  # a variant of params.yaml's `runs.downstream`
seed = 0
# overrides merged over params.yaml, one dict per section this stage reads
data = {}
runs = {}
make_pseudo_labels = {}
train_seg = {}
eval_seg = {}  # its selection (best_on_val: val scored after each epoch) and resize

# %%
from sslib import notebook, paths
from sslib.stages import train_seg as stage

params = notebook.setup("train_seg", params_path, data=data, runs=runs, make_pseudo_labels=make_pseudo_labels,
                        train_seg=train_seg, eval_seg=eval_seg)
metrics = stage.run(params, variant, seed)
metrics

# %% [markdown]
# ## Loss curves
# Mean losses per epoch (`reports/train_seg/<variant>/seed<seed>/losses.csv`, also drawn by
# `dvc plots show`), the learning rate of the poly schedule and, with `eval_seg.selection:
# best_on_val`, each epoch's val mIoU (the selected epoch marked).

# %%
import matplotlib.pyplot as plt
import pandas as pd

losses = pd.read_csv(paths.seg_reports(variant, seed) / paths.LOSSES)
keys = ["loss", *stage.loss_names(params.train_seg.method), "lr", *(["val_miou"] if "val_miou" in losses else [])]
fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8))
for ax, key in zip(axes, keys):
    ax.plot(losses["epoch"], losses[key], marker="o")
    ax.set(title=key, xlabel="epoch")
    if key == "val_miou":
        ax.axvline(metrics["selected"]["epoch"], color="k", ls=":", label="selected")
        ax.legend()
plt.tight_layout()
