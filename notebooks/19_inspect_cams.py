# %% [markdown]
# # Inspect CAMs: what each variant sees, reconstructs and is pulled toward
#
# For a few images (names as parameters, default: evenly spaced val images) and every
# variant (seed `seed`): the image, its ground truth and superpixel boundaries; each
# present class's CAM (the stored multi-scale CAM of the `eval_cam` stage); the decoder's
# reconstruction of the image from the single-scale CAM logits (variants with
# reconstruction); and the alignment target of activation self-modulation: the
# superpixel-averaged CAM and the reliable region (CAM > `align_threshold`, eroded),
# whose maximum is the target (`sslib.losses.alignment_maps`). Runs after `dvc repro`
# without edits; change `names` to look at other images. The maps are computed by
# `sslib/stages/inspect_cams.py`, drawn by `sslib.viz.inspect_figure`.

# %% tags=["parameters"]
params_path = "params.yaml"  # relative to the project root
split = "val"  # "train" / "val" (params' data.train_split / data.val_split) or a split name
names = []  # image names; empty: n_images evenly spaced images of the split
n_images = 2
seed = 0
variant_names = []  # the variants shown; empty: all of runs.variants
# overrides merged over params.yaml, one dict per section this stage reads
data = {}
superpixels = {}
runs = {}
ssc = {}
variants = {}
train_cam = {}
eval_cam = {}

# %%
import matplotlib.pyplot as plt

from sslib import notebook, viz
from sslib.stages import inspect_cams as stage

params = notebook.setup("inspect_cams", params_path, data=data, superpixels=superpixels, runs=runs, ssc=ssc,
                        variants=variants, train_cam=train_cam, eval_cam=eval_cam)  # writes nothing but this notebook
records = stage.run(params, split, names, n_images, seed, variant_names)
print(f"split {stage.resolve_split(params, split)}, images {[r.name for r in records]}, "
      f"variants {list(variant_names) or list(params.runs.variants)}, seed {seed}")

# %%
for record in records:
    viz.inspect_figure(record)
    plt.show()
