# %% [markdown]
# # IR labels of one downstream run, and their quality
#
# IRN's inter-pixel-relation labels (the first pseudo-label stage) from the train CAMs of
# one variant and seed of `runs.downstream` (the `eval_cam` stage's files): each image's
# CAMs give a foreground map (background plane `make_ir_labels.fg_threshold`) and a
# background map (plane `bg_threshold`), both refined by a dense CRF on the image
# (`make_ir_labels.crf`); a pixel is its foreground class where the foreground map has one,
# background where both maps say background, and ignored (255) in between. The labels go to
# `<make_ir_labels.out_dir>/<variant>/seed<seed>/<name>.png`; their precision and coverage
# against the ground truth to the stage's metrics.json. The `make_ir_labels` stage runs
# this notebook once per downstream variant and seed; see `sslib/stages/make_ir_labels.py`.

# %% tags=["parameters"]
params_path = "params.yaml"  # relative to the project root
variant = "ssc"  # a variant of params.yaml's `runs.downstream`
seed = 0
n_show = 4  # images whose CAMs and IR labels are drawn below
# overrides merged over params.yaml, one dict per section this stage reads
data = {}
eval_cam = {}
make_ir_labels = {}

# %%
from sslib import notebook, paths
from sslib.stages import make_ir_labels as stage

params = notebook.setup("make_ir_labels", params_path, data=data, eval_cam=eval_cam,
                        make_ir_labels=make_ir_labels)  # run by hand: writes under scratch/
split = params.data.train_split
metrics = stage.run(params, variant, seed)
metrics[split]

# %% [markdown]
# ## A few train images: the image, its ground truth, the largest of its CAMs, its IR label

# %%
import numpy as np

from sslib import viz
from sslib.data import build_dataset
from sslib.pseudo_labels import load_ir_label

ds = build_dataset(params.data, split)
idx = np.linspace(0, len(ds) - 1, n_show, dtype=int)
rows = viz.class_cam_rows(ds, paths.cam_dir(params, variant, seed), split, idx)
labels = [load_ir_label(stage.label_file(params, variant, seed, ds.names[i])) for i in idx]
fig = viz.ir_label_grid(rows, labels)
