# %% [markdown]
# # Train the CAM network (one variant, one seed)
#
# Trains the CAM network (`model.backbone`) of one ablation variant (`variants.<name>` in
# params.yaml, merged over `ssc`) with one seed: classification loss, plus the
# CAM-driven reconstruction loss (`reconstruction`) and the superpixel alignment loss
# (`alignment`) when the variant switches them on. The `train_cam` stage runs this
# notebook once per variant and seed; see `sslib/stages/train_cam.py` for the step and
# `sslib/training.py` for the loop. With `runs.devices > 1` the training runs under `torchrun` in a subprocess.

# %% tags=["parameters"]
params_path = "params.yaml"  # relative to the project root
variant = "ssc"  # a key of params.yaml's `variants`
seed = 0
# overrides merged over params.yaml, one dict per section this stage reads
data = {}
superpixels = {}
augment = {}
model = {}
runs = {}
ssc = {}
variants = {}
train_cam = {}

# %%
from sslib import config, notebook, paths
from sslib.stages import train_cam as stage

params = notebook.setup("train_cam", params_path, data=data, superpixels=superpixels, augment=augment,
                        model=model, runs=runs, ssc=ssc, variants=variants, train_cam=train_cam)
settings = config.variant_config(params, variant)
print(f"variant {variant!r}, seed {seed}")
settings

# %%
metrics = stage.run(params, variant, seed)
metrics

# %% [markdown]
# ## Loss curves
# Mean losses per epoch (`reports/train_cam/<variant>/seed<seed>/losses.csv`, also
# drawn by `dvc plots show`). The alignment loss is zero during the warm-up epochs.

# %%
import matplotlib.pyplot as plt
import pandas as pd

losses = pd.read_csv(paths.train_reports(variant, seed) / paths.LOSSES)
parts = [k for k in stage.LOSS_NAMES if losses[k].abs().sum() > 0]  # the terms the stage logs
fig, axes = plt.subplots(1, len(parts) + 1, figsize=(3.2 * (len(parts) + 1), 2.8), squeeze=False)
for ax, key in zip(axes[0], ["loss", *parts]):
    ax.plot(losses["epoch"], losses[key], marker="o")
    ax.set(title=key, xlabel="epoch")
plt.tight_layout()
