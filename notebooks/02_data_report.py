# %% [markdown]
# # The data set at a glance
#
# Samples with their ground-truth masks and superpixel boundaries, class
# frequencies, and (for the synthetic set) how strongly each class is tied to
# its background context: the shortcut a classifier can learn, and the reason
# CAMs spill into the background. Writes the figure `data_samples` under
# `reports/figures/` and the DVC metrics file `reports/data_stats.json`
# (`sslib/stages/data_report.py`).

# %% tags=["parameters"]
params_path = "params.yaml"  # relative to the project root
n_samples = 6  # images shown in the figure (half from each split)
# overrides merged over params.yaml, one dict per section this stage reads
data = {}
superpixels = {}

# %%
from sslib import notebook, paths, viz
from sslib.stages import data_report as stage

params = notebook.setup("data_report", params_path, data=data, superpixels=superpixels)  # by hand: scratch/
datasets = stage.datasets(params)
classes = next(iter(datasets.values())).classes
print(f"{params.data.dataset}: {len(classes)} classes; "
      + ", ".join(f"{s}: {len(d)} images" for s, d in datasets.items()))

# %% [markdown]
# ## Samples: image, ground truth, superpixels

# %%
fig = viz.sample_grid(stage.sample_rows(datasets, n_samples), classes)
viz.save_figure(fig, paths.figure("data_report", "data_samples"), dpi=80)

# %% [markdown]
# ## Class frequencies (image-level labels derived from the masks)

# %%
counts = stage.class_counts(datasets)
ax = counts.plot.bar(figsize=(max(6, len(classes) * 0.4), 3), title="images containing each class")
counts

# %% [markdown]
# ## Context correlation (synthetic set only)
#
# Rows: object class; columns: the background context the object was shown on.
# The diagonal is each class's preferred context; off-diagonal mass is what keeps
# context from being a sufficient cue.

# %%
meta = stage.synthetic_meta(params)
if meta is not None:
    from sslib.data import synthetic as syn

    print(syn.summarize(meta))

# %% [markdown]
# ## The statistics (`reports/data_stats.json`)
# Images and mean classes per image of each split, the superpixels' statistics and, for
# the synthetic set, the context statistics.

# %%
stats = stage.run(params)
stats
