# %% [markdown]
# # From CAMs to pseudo labels: the table over the downstream runs
#
# For every variant of `runs.downstream`, mean and spread over its seeds: the CAMs' mIoU on
# the train split (best threshold), the IR labels' precision and coverage, the random-walk
# pseudo labels' mIoU, precision, recall and background false-positive rate, and the
# confidence masks' precision and coverage. Does a better CAM give a better pseudo label, and
# does the random walk improve on the CAMs? Written to `reports/pseudo_labels.md` and `.csv`;
# see `sslib/stages/pseudo_label_table.py` and `sslib/downstream.py`.

# %% tags=["parameters"]
params_path = "params.yaml"  # relative to the project root
n_images = 3  # train images per variant in the figure
# overrides merged over params.yaml, one dict per section this stage reads
data = {}
runs = {}
eval_cam = {}
make_ir_labels = {}
train_irn = {}
make_pseudo_labels = {}

# %%
from IPython.display import Markdown

from sslib import notebook, paths, viz
from sslib.stages import pseudo_label_table as stage

params = notebook.setup("pseudo_label_table", params_path, data=data, runs=runs, eval_cam=eval_cam,
                        make_ir_labels=make_ir_labels, train_irn=train_irn, make_pseudo_labels=make_pseudo_labels)
result = stage.run(params)
Markdown(result.markdown)

# %% [markdown]
# ## Per run: pseudo-label mIoU against CAM mIoU
# One point per seed; above the diagonal, the random walk improved on the CAMs.

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(4, 4))
for variant, g in result.runs.groupby("variant", sort=False):
    ax.scatter(g["cam_miou"] * 100, g["pl_miou"] * 100, label=variant)
lo = min(result.runs["cam_miou"].min(), result.runs["pl_miou"].min()) * 100 - 2
hi = max(result.runs["cam_miou"].max(), result.runs["pl_miou"].max()) * 100 + 2
ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
ax.set(xlabel="CAM mIoU (train, best threshold)", ylabel="pseudo-label mIoU (train)", xlim=(lo, hi), ylim=(lo, hi))
ax.legend()
plt.tight_layout()

# %% [markdown]
# ## Image, CAM, boundary map, IR label, pseudo label, confident pixels
# The first downstream seed of each variant; the boundary map is recomputed with the run's
# network (bright: boundary), the confident pixels are the pseudo label where the mask keeps
# it (darkened elsewhere: ignored by the segmentation loss).

# %%
fig = viz.panel_grid(stage.examples(params, n_images), size=1.9)
viz.save_figure(fig, paths.figure("pseudo_label_table", "pseudo_labels"))
