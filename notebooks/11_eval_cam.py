# %% [markdown]
# # CAMs of one trained run, and their quality as pseudo labels
#
# Makes the multi-scale, flipped CAMs of one variant and seed (`eval_cam` in params.yaml)
# for the splits in `eval_cam.splits`, stores them under
# `<eval_cam.out_dir>/<variant>/seed<seed>/`, and sweeps the background threshold: mIoU
# per threshold, and at the best and the fixed threshold the per-class IoU, precision,
# recall and the background false-positive rate (the share of ground-truth background
# pixels labelled as a class); the mean CAM on the class's own pixels and on background;
# and, for a variant with a decoder, the PSNR / SSIM of its reconstruction of the val
# images. The `eval_cam` stage runs this notebook once per variant and
# seed; see `sslib/stages/eval_cam.py`. With `runs.devices > 1` the CAMs are made under
# `torchrun` in a subprocess.

# %% tags=["parameters"]
params_path = "params.yaml"  # relative to the project root
variant = "ssc"  # a key of params.yaml's `variants`
seed = 0
n_show = 4  # images whose CAMs are drawn below
# overrides merged over params.yaml, one dict per section this stage reads
data = {}
runs = {}
ssc = {}
variants = {}
train_cam = {}
eval_cam = {}

# %%
from sslib import notebook, paths
from sslib.stages import eval_cam as stage

params = notebook.setup("eval_cam", params_path, data=data, runs=runs, ssc=ssc, variants=variants,
                        train_cam=train_cam, eval_cam=eval_cam)  # run by hand: writes under scratch/
splits = stage.splits(params)
metrics = stage.run(params, variant, seed)
{split: metrics[split]["best"]["miou"] for split in splits}

# %% [markdown]
# ## mIoU against the background threshold

# %%
import pandas as pd

sweep = pd.read_csv(paths.eval_reports(variant, seed) / paths.SWEEP)
ax = sweep.plot(x="threshold", marker=".", figsize=(5, 3), title=f"{variant}, seed {seed}")
ax.set_ylabel("mIoU")
summary = pd.DataFrame({
    f"{split} {which}": {k: metrics[split][which][k] for k in
                          ("threshold", "miou", "mean_precision", "mean_recall", "background_fp_rate")}
    for split in splits for which in ("best", "fixed")})
summary.round(3)

# %% [markdown]
# ## Per-class IoU at the best threshold

# %%
pd.DataFrame({split: metrics[split]["best"]["iou"] for split in splits}).round(3)

# %% [markdown]
# ## CAMs of a few images of the last split (val), each present class max-normalised

# %%
import numpy as np

from sslib import viz
from sslib.data import build_dataset

ds = build_dataset(params.data, splits[-1])
idx = np.linspace(0, len(ds) - 1, n_show, dtype=int)
fig = viz.cam_grid(viz.class_cam_rows(ds, paths.cam_dir(params, variant, seed), splits[-1], idx))
