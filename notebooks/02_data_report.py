# %% [markdown]
# # The data set at a glance
#
# Samples with their ground-truth masks and superpixel boundaries, class
# frequencies, and (for the synthetic set) how strongly each class is tied to
# its background context: the shortcut a classifier can learn, and the reason
# CAMs spill into the background. Writes `reports/figures/data_samples.png` and
# the DVC metrics file `reports/data_stats.json`.

# %% tags=["parameters"]
params_path = "params.yaml"  # relative to the project root
data = {}  # overrides merged over params.yaml's `data` section
superpixels = {}  # overrides merged over params.yaml's `superpixels` section
n_samples = 6  # images shown per split in the figure

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from sslib import config, notebook, paths
from sslib import superpixels as sp
from sslib.data import build_dataset
from sslib.data.voc import voc_palette
from sslib.io import write_json

notebook.enter_project_root()
params = config.load(params_path, overrides={"data": data, "superpixels": superpixels})
params = notebook.route_outputs(params, "data_report")  # run by hand: writes under scratch/
reports = paths.reports("data_report")
dcfg, spcfg = params.data, params.superpixels
splits = [dcfg.train_split, dcfg.val_split]
datasets = {s: build_dataset(dcfg, s, superpixel_dir=spcfg.out_dir) for s in splits}
classes = datasets[dcfg.train_split].classes
print(f"{dcfg.dataset}: {len(classes)} classes; " + ", ".join(f"{s}: {len(d)} images" for s, d in datasets.items()))

# %% [markdown]
# ## Samples: image, ground truth, superpixels

# %%
palette = voc_palette()
rows = []
for s, ds in datasets.items():
    rows += [(s, ds[i]) for i in np.linspace(0, len(ds) - 1, n_samples // 2, dtype=int)]
fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.5 * len(rows)), squeeze=False)
for (split, item), ax in zip(rows, axes):
    img = item["image"]
    mask = item["mask"].numpy().astype(np.uint8)
    present = [classes[k] for k in np.flatnonzero(item["label"].numpy())]
    over = img.copy()
    if "superpixels" in item:
        over[sp.boundaries(item["superpixels"].numpy())] = (255, 255, 0)
    ax[0].imshow(img)
    ax[0].set_title(f"{split}/{item['name']}", fontsize=8)
    ax[1].imshow(palette[mask])
    ax[1].set_title(", ".join(present), fontsize=8)
    ax[2].imshow(over)
    ax[2].set_title("superpixels", fontsize=8)
    for a in ax:
        a.axis("off")
plt.tight_layout()
(reports / "figures").mkdir(parents=True, exist_ok=True)
fig.savefig(reports / "figures" / "data_samples.png", dpi=80)

# %% [markdown]
# ## Class frequencies (image-level labels derived from the masks)

# %%
labels = json.loads(Path(dcfg.prepared_dir, "labels.json").read_text())["labels"]
counts = pd.DataFrame({
    s: np.bincount([k for n in ds.names for k in labels[n]], minlength=len(classes)) for s, ds in datasets.items()
}, index=list(classes))
ax = counts.plot.bar(figsize=(max(6, len(classes) * 0.4), 3), title="images containing each class")
counts

# %%
stats = {
    "dataset": dcfg.dataset,
    "num_classes": len(classes),
    "images": {s: len(ds) for s, ds in datasets.items()},
    "classes_per_image": {s: float(np.mean([len(labels[n]) for n in ds.names])) for s, ds in datasets.items()},
}
sp_meta = Path(spcfg.out_dir, "meta.json")
if sp_meta.exists():
    m = json.loads(sp_meta.read_text())
    stats["superpixels"] = {k: v for k, v in m.items() if isinstance(v, (int, float))}

# %% [markdown]
# ## Context correlation (synthetic set only)
#
# Rows: object class; columns: the background context the object was shown on.
# The diagonal is each class's preferred context; off-diagonal mass is what keeps
# context from being a sufficient cue.

# %%
if dcfg.dataset == "synthetic":
    from sslib.data import synthetic as syn

    meta = json.loads(Path(dcfg.root, "meta.json").read_text())
    table = syn.summarize(meta)
    print(table)
    stats["synthetic"] = syn.context_stats(meta)
    print(json.dumps(stats["synthetic"], indent=1))

# %%
write_json(reports / "data_stats.json", stats)
stats
