# %% [markdown]
# # Segment the val split (one downstream run)
#
# The run's segmentation network(s) on every val image: logits at `eval_seg.scales` (BECO's
# five), each resized to the image, fused by the pixel-wise max (`fusion`); then, with
# `crf: true`, the dense CRF on the fused softmax (BECO's settings, on the real image; the
# official code's uint8-wrapped image with `crf_image: beco`). Predictions are VOC-palette
# PNGs; the mIoU, per-class IoU, precision and recall, with and without the CRF, go to
# `reports/eval_seg/<variant>/seed<seed>/metrics.json`. See `sslib/stages/eval_seg.py` and
# `sslib/inference.py`.

# %% tags=["parameters"]
params_path = "params.yaml"  # relative to the project root
variant = "ssc"  # a variant of params.yaml's `runs.downstream`
seed = 0
n_show = 4  # val images drawn below
# overrides merged over params.yaml, one dict per section this stage reads
data = {}
train_seg = {}
eval_seg = {}

# %%
from sslib import notebook, paths
from sslib.stages import eval_seg as stage

params = notebook.setup("eval_seg", params_path, data=data, train_seg=train_seg, eval_seg=eval_seg)
metrics = stage.run(params, variant, seed)
{"miou (final)": metrics["final"]["miou"], "miou (without CRF)": metrics["no_crf"]["miou"], "crf": metrics["crf"]}

# %% [markdown]
# ## Per-class IoU, precision and recall (final prediction)

# %%
import pandas as pd

pd.DataFrame(metrics["final"]["per_class"]).T.mul(100).round(1)

# %% [markdown]
# ## A few val images: image, ground truth, prediction

# %%
import numpy as np

from sslib import viz
from sslib.data import build_dataset
from sslib.formats import read_png_labels

ds = build_dataset(params.data, params.data.val_split)
rows = []
for i in np.linspace(0, len(ds) - 1, n_show, dtype=int):
    s = ds[int(i)]
    pred = read_png_labels(paths.seg_prediction_file(params, variant, seed, s["name"]))
    rows.append([(s["name"], s["image"]), ("ground truth", viz.label_image(s["mask"])),
                 ("prediction", viz.label_image(pred))])
fig = viz.panel_grid(rows, size=2.4)
