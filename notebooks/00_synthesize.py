# %% [markdown]
# # Synthesize the "context" data set
#
# Writes a procedurally generated data set in the PASCAL VOC 2012 layout
# (`JPEGImages/`, `SegmentationClass/`, `ImageSets/Segmentation/`), deterministic
# from `synthetic.seed`. Each class prefers one background context (boats on
# water, planes in sky, ...) with probability `synthetic.context_prob`, so a
# classifier trained on image labels can lean on the context, and its CAMs spill
# into it: the over-activation SSC constrains. See `sslib/data/synthetic.py`.

# %% tags=["parameters"]
params_path = "params.yaml"  # relative to the project root
synthetic = {}  # overrides merged over params.yaml's `synthetic` section

# %%
from sslib import notebook
from sslib.stages import synthesize

params = notebook.setup("synthesize", params_path, synthetic=synthetic)  # run by hand: writes under scratch/
cfg = params.synthetic
cfg

# %%
summary = synthesize.run(params)
summary

# %% [markdown]
# ## Class x context co-occurrence
# How often each class appears on each background context (all splits).

# %%
import matplotlib.pyplot as plt
import seaborn as sns

from sslib.data import synthetic as syn

table = syn.summarize(syn.read_meta(cfg.out_dir))
fig, ax = plt.subplots(figsize=(7, 4))
sns.heatmap(table, annot=True, fmt="d", cmap="Blues", ax=ax)
ax.set(xlabel="background context", ylabel="object class")
plt.tight_layout()

# %% [markdown]
# ## A few images and their masks

# %%
from sslib.data.voc import voc_palette

shown = syn.samples(cfg.out_dir, "train", 8)
fig, axes = plt.subplots(2, len(shown), figsize=(2 * len(shown), 4), squeeze=False)
for j, (name, image, mask) in enumerate(shown):
    axes[0, j].imshow(image)
    axes[1, j].imshow(voc_palette()[mask])
    axes[0, j].set_title(name, fontsize=7)
for ax in axes.ravel():
    ax.axis("off")
plt.tight_layout()
