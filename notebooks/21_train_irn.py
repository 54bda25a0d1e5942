# %% [markdown]
# # Train IRN's boundary network (one downstream run)
#
# IRN's class-boundary branch on the frozen backbone of the CAM network (`model.backbone`),
# trained on one downstream run's IR labels (the `make_ir_labels` stage) with IRN's
# affinity loss: pixel pairs within `train_irn.radius` of the label downscaled x0.25 are
# background-positive, foreground-positive or negative (255 is ignored), and the affinity of
# a pair is one minus the largest boundary probability on the path between them. The
# `train_irn` stage runs this notebook once per variant and seed of `runs.downstream`; see
# `sslib/stages/train_irn.py` and `sslib/training.py` (the loop it shares with `train_cam`).

# %% tags=["parameters"]
params_path = "params.yaml"  # relative to the project root
variant = "ssc"  # a variant of params.yaml's `runs.downstream`
seed = 0
n_show = 4  # train images whose boundary maps are drawn below
# overrides merged over params.yaml, one dict per section this stage reads
data = {}
model = {}
runs = {}
make_ir_labels = {}
train_irn = {}

# %%
from sslib import notebook, paths
from sslib.stages import train_irn as stage

params = notebook.setup("train_irn", params_path, data=data, model=model, runs=runs,
                        make_ir_labels=make_ir_labels, train_irn=train_irn)
metrics = stage.run(params, variant, seed)
metrics

# %% [markdown]
# ## Loss curves and boundary maps
# Mean losses per epoch (`reports/train_irn/<variant>/seed<seed>/losses.csv`, also drawn by
# `dvc plots show`): the two positive-pair terms and the negative-pair term. Below, a few
# train images with the boundary map of the trained network (mean logit of the image and
# its flip, at stride 4).

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from sslib import viz
from sslib.data import EvalTransform, build_dataset
from sslib.models import load_boundary_net

losses = pd.read_csv(paths.irn_reports(variant, seed) / paths.LOSSES)
fig, axes = plt.subplots(1, 4, figsize=(12.8, 2.8))
for ax, key in zip(axes, ["loss", *stage.LOSS_NAMES]):
    ax.plot(losses["epoch"], losses[key], marker="o")
    ax.set(title=key, xlabel="epoch")
plt.tight_layout()

# %%
net = load_boundary_net(paths.irn_model(params, variant, seed))
ds = build_dataset(params.data, params.data.train_split, with_mask=False)
tensors = build_dataset(params.data, params.data.train_split, transform=EvalTransform(), with_mask=False)
rows = []
for i in np.linspace(0, len(ds) - 1, n_show, dtype=int):
    with torch.no_grad():
        b = net.boundary(tensors[int(i)]["image"][None])[0, 0].numpy()
    rows.append([(ds.names[i], ds[int(i)]["image"]), ("boundary (stride 4)", b)])
fig = viz.panel_grid(rows, size=2.6)
