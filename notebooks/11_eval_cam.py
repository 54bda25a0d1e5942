# %% [markdown]
# # CAMs of one trained run, and their quality as pseudo labels
#
# Makes the multi-scale, flipped CAMs of one variant and seed (`cam` in params.yaml) for
# the train and val splits, stores them under `artifacts/cams/<variant>/seed<seed>/`, and
# sweeps the background threshold (`evaluate`): mIoU per threshold, and at the best and
# the fixed threshold the per-class IoU, precision, recall and over-activation (the share
# of a class's false positives that lie on ground-truth background). The `eval_cam` stage
# runs this notebook once per variant and seed; see `sslib/eval_cam.py`.

# %% tags=["parameters"]
params_path = "params.yaml"  # relative to the project root
variant = "ssc"  # a key of params.yaml's `variants`
seed = 0
n_show = 4  # images whose CAMs are drawn below

# %%
from sslib import config, eval_cam, notebook

notebook.enter_project_root()
params = config.load(params_path)
params = notebook.route_outputs(params, "eval_cam")  # run by hand: writes under scratch/
metrics = eval_cam.run(params, variant, seed, params_path)
{split: metrics[split]["best"]["miou"] for split in eval_cam.eval_splits(params)}

# %% [markdown]
# ## mIoU against the background threshold

# %%
import matplotlib.pyplot as plt
import pandas as pd

sweep = pd.read_csv(eval_cam.eval_report_dir(variant, seed) / eval_cam.SWEEP)
ax = sweep.plot(x="threshold", marker=".", figsize=(5, 3), title=f"{variant}, seed {seed}")
ax.set_ylabel("mIoU")
summary = pd.DataFrame({
    f"{split} {which}": {k: metrics[split][which][k] for k in
                          ("threshold", "miou", "mean_precision", "mean_recall", "mean_over_activation")}
    for split in eval_cam.eval_splits(params) for which in ("best", "fixed")})
summary.round(3)

# %% [markdown]
# ## Per-class IoU at the best threshold

# %%
pd.DataFrame({split: metrics[split]["best"]["iou"] for split in eval_cam.eval_splits(params)}).round(3)

# %% [markdown]
# ## CAMs of a few val images (each present class, max-normalised)

# %%
import numpy as np

from sslib.cam import cam_path, load_cam
from sslib.data import build_dataset
from sslib.viz import heat_overlay, label_image

ds = build_dataset(params.data, params.data.val_split)
idx = np.linspace(0, len(ds) - 1, n_show, dtype=int)
cols = 1 + max(int(ds.label(i).sum()) for i in idx) + 1
fig, axes = plt.subplots(len(idx), cols, figsize=(2.2 * cols, 2.2 * len(idx)), squeeze=False)
for row, i in zip(axes, idx):
    s = ds[i]
    c = load_cam(cam_path(eval_cam.cam_dir(params, variant, seed), params.data.val_split, s["name"]))
    row[0].imshow(s["image"])
    row[0].set_title(s["name"], fontsize=8)
    row[1].imshow(label_image(s["mask"].numpy()))
    row[1].set_title("ground truth", fontsize=8)
    for a, k, m in zip(row[2:], c["keys"], c["high_res"]):
        a.imshow(heat_overlay(s["image"], m))
        a.set_title(ds.classes[k], fontsize=8)
    for a in row:
        a.axis("off")
plt.tight_layout()
