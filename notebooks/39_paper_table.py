# %% [markdown]
# # The paper's table: CAM, pseudo label, segmentation
#
# For every variant of `runs.downstream`, mean and spread over its seeds: the CAMs' mIoU on the
# train split (best threshold), the pseudo labels' mIoU on the train split, and the
# segmentation network's mIoU on the val split (multi-scale, CRF), beside the paper's number
# where the data set is the paper's. Does the network improve on its labels, as in the paper?
# Does `ssc` beat `baseline` beyond the seed spread? Written to `reports/paper_table.md` and
# `.csv`; see `sslib/stages/paper_table.py` and `sslib/downstream.py`.

# %% tags=["parameters"]
params_path = "params.yaml"  # relative to the project root
n_images = 4  # val images in the figure
# overrides merged over params.yaml, one dict per section this stage reads
data = {}
runs = {}
eval_cam = {}
make_pseudo_labels = {}
train_seg = {}
eval_seg = {}

# %%
from IPython.display import Markdown

from sslib import notebook, paths, viz
from sslib.stages import paper_table as stage

params = notebook.setup("paper_table", params_path, data=data, runs=runs, eval_cam=eval_cam,
                        make_pseudo_labels=make_pseudo_labels, train_seg=train_seg, eval_seg=eval_seg)
result = stage.run(params)
Markdown(result.markdown)

# %% [markdown]
# ## Per run: CAM -> pseudo label -> segmentation
# One line per seed, one colour per variant.

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(5, 3.4))
stages = ["cam_miou", "pl_miou", "seg_miou"]
for j, (variant, g) in enumerate(result.runs.groupby("variant", sort=False)):
    for k, (_, r) in enumerate(g.iterrows()):
        ax.plot(range(3), [r[s] * 100 for s in stages], marker="o", color=f"C{j}", alpha=0.8,
                label=variant if k == 0 else None)
ax.set_xticks(range(3), ["CAM (train)", "pseudo label (train)", "segmentation (val)"])
ax.set(ylabel="mIoU (%)")
ax.legend()
plt.tight_layout()

# %% [markdown]
# ## Segmentation predictions across variants
# Val images, the ground truth, and each variant's prediction (the first downstream seed).

# %%
fig = viz.panel_grid(stage.examples(params, n_images), size=2.0)
viz.save_figure(fig, paths.figure("paper_table", "segmentation"))
