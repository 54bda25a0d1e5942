# %% [markdown]
# # Pseudo labels and confidence masks (one downstream run)
#
# The chosen refiner (`make_pseudo_labels.refiner`) and BECO's confidence masks for one
# variant and seed of `runs.downstream`. The default `random_walk` (IRN): every train
# image's boundary map (the `train_irn` network, image and flip), the run's stride-4 CAMs
# walked on it (`make_pseudo_labels.refiners.random_walk.radius`, `beta`, `exp_times`),
# upsampled, normalised by the maximum, against a constant background score
# `bg_threshold`: the pseudo label (`cams`: the same without the walk); then the `mask_ratio` most confident share of
# each label's pixels (top-1 minus top-2 score): the confidence mask. Labels and masks are
# PNGs; their quality against the ground truth goes to the stage's metrics.json. See
# `sslib/stages/make_pseudo_labels.py`.

# %% tags=["parameters"]
params_path = "params.yaml"  # relative to the project root
variant = "ssc"  # a variant of params.yaml's `runs.downstream`
seed = 0
n_show = 4  # train images drawn below
# overrides merged over params.yaml, one dict per section this stage reads
data = {}
runs = {}
eval_cam = {}
train_irn = {}
make_pseudo_labels = {}

# %%
from sslib import notebook, paths
from sslib.stages import make_pseudo_labels as stage

params = notebook.setup("make_pseudo_labels", params_path, data=data, runs=runs, eval_cam=eval_cam,
                        train_irn=train_irn, make_pseudo_labels=make_pseudo_labels)
split = params.data.train_split
metrics = stage.run(params, variant, seed)
{k: v for k, v in metrics[split].items() if k not in ("iou", "precision", "recall")}

# %% [markdown]
# ## Per-class IoU of the pseudo labels

# %%
import pandas as pd

pd.DataFrame({k: metrics[split][k] for k in ("iou", "precision", "recall")}).mul(100).round(1)

# %% [markdown]
# ## A few train images: image, ground truth, pseudo label, confident pixels

# %%
import numpy as np

from sslib import viz
from sslib.data import build_dataset
from sslib.pseudo_labels import load_confidence_mask, load_ir_label

ds = build_dataset(params.data, split)
rows = []
for i in np.linspace(0, len(ds) - 1, n_show, dtype=int):
    s = ds[int(i)]
    label = load_ir_label(paths.pseudo_label_file(params, variant, seed, s["name"]))
    mask = load_confidence_mask(paths.confidence_mask_file(params, variant, seed, s["name"]))
    rows.append([(s["name"], s["image"]), ("ground truth", viz.label_image(s["mask"])),
                 ("pseudo label", viz.label_image(label)), ("confident", viz.confidence_overlay(s["image"], label, mask))])
fig = viz.panel_grid(rows, size=2.4)
