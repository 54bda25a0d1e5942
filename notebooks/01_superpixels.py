# %% [markdown]
# # Superpixels
#
# Precomputes superpixels for every image of the splits in `superpixels.splits`
# (scikit-image SLIC or Felzenszwalb, chosen by `superpixels.method`). SSC's
# activation self-modulation averages CAMs inside these regions, so their size
# sets how coarse the spatial prior is. Output: one 16-bit PNG of ids per image
# under `superpixels.out_dir`, plus `meta.json` with statistics.

# %% tags=["parameters"]
params_path = "params.yaml"  # relative to the project root
data = {}  # overrides merged over params.yaml's `data` section
superpixels = {}  # overrides merged over params.yaml's `superpixels` section

# %%
from sslib import notebook
from sslib.stages import superpixels as stage

params = notebook.setup("superpixels", params_path, data=data, superpixels=superpixels)  # by hand: scratch/
cfg = params.superpixels
cfg

# %%
items = stage.images(params)
print(f"{len(items)} images in splits {cfg.splits}")
stats = stage.run(params)
stats

# %% [markdown]
# Superpixel boundaries on a few training images, and each image painted with
# its superpixels' mean colours (what "superpixel-averaged" means for a CAM).

# %%
import matplotlib.pyplot as plt

from sslib import superpixels as sp
from sslib.formats import read_rgb

names = sorted(items)[:4]
fig, axes = plt.subplots(2, len(names), figsize=(3 * len(names), 6), squeeze=False)
for j, name in enumerate(names):
    img = read_rgb(items[name])
    ids = sp.load(sp.path_for(cfg.out_dir, name), img.shape[:2])
    over = img.copy()
    over[sp.boundaries(ids)] = (255, 255, 0)
    axes[0, j].imshow(over)
    axes[0, j].set_title(f"{name}: {ids.max() + 1} superpixels", fontsize=8)
    axes[1, j].imshow(sp.mean_fill(img, ids))
for ax in axes.ravel():
    ax.axis("off")
plt.tight_layout()
