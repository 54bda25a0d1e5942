# %% [markdown]
# # Train the CAM network (one variant, one seed)
#
# Trains the ResNet-50 CAM network of one ablation variant (`variants.<name>` in
# params.yaml, merged over `ssc`) with one seed: classification loss, plus the
# CAM-driven reconstruction loss (`reconstruction`) and the superpixel alignment loss
# (`alignment`) when the variant switches them on. The `train_cam` stage runs this
# notebook once per variant and seed; see `sslib/train_cam.py` for the loop.
# With `train.devices > 1` the training runs under `torchrun` in a subprocess.

# %% tags=["parameters"]
params_path = "params.yaml"  # relative to the project root
variant = "ssc"  # a key of params.yaml's `variants`
seed = 0
train = {}  # overrides merged over params.yaml's `train` section
model = {}  # overrides merged over params.yaml's `model` section

# %%
from sslib import config, notebook

notebook.enter_project_root()
params = config.load(params_path, overrides={"train": train, "model": model})
params = notebook.route_outputs(params, "train_cam")  # run by hand: writes under scratch/
settings = config.variant_config(params, variant)
print(f"variant {variant!r}, seed {seed}")
settings

# %%
from sslib import train_cam

metrics = train_cam.run(params, variant, seed, params_path)
metrics

# %% [markdown]
# ## Loss curves
# Mean losses per epoch (`reports/train_cam/<variant>/seed<seed>/losses.csv`, also
# drawn by `dvc plots show`). The alignment loss is zero during the warm-up epochs.

# %%
import matplotlib.pyplot as plt
import pandas as pd

losses = pd.read_csv(train_cam.report_dir(variant, seed) / "losses.csv")
parts = [k for k in ("cls", "rec", "align") if losses[k].abs().sum() > 0]
fig, axes = plt.subplots(1, len(parts) + 1, figsize=(3.2 * (len(parts) + 1), 2.8), squeeze=False)
for ax, key in zip(axes[0], ["loss", *parts]):
    ax.plot(losses["epoch"], losses[key], marker="o")
    ax.set(title=key, xlabel="epoch")
plt.tight_layout()
