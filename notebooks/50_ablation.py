# %% [markdown]
# # Ablation: does SSC curb over-activation?
#
# Collects the `eval_cam` results of every variant and seed (`runs.variants` x
# `runs.seeds`) and writes (`sslib/stages/ablation.py`)
#
# * `reports/ablation.csv` and `reports/ablation.md`: one row per variant, mean and
#   standard deviation over the seeds of the CAM mIoU on the train split (pseudo-label
#   quality, as WSSS papers report it) at each run's best background threshold and at
#   the fixed threshold `eval_cam.fixed_threshold`, precision, recall and the
#   background false-positive rate (over-activation) at both thresholds; plus the val
#   mIoU, how localised the CAMs are, the decoder's PSNR / SSIM, and a comparison
#   with `baseline` that says whether each difference lies inside the spread over seeds;
# * `reports/ablation/sweep_<split>.csv`: mIoU against threshold, mean over seeds, one
#   column per variant (a DVC plot: `dvc plots show`);
# * figures under `reports/figures/`: mIoU-threshold curves, per-class IoU bars, and CAM
#   overlays of the same val images across the variants.

# %% tags=["parameters"]
params_path = "params.yaml"  # relative to the project root
reference = "baseline"  # the variant every other is compared with
n_images = 4  # val images in the qualitative figure
overlay_seed = 0  # whose CAMs the qualitative figure shows
# overrides merged over params.yaml, one dict per section this stage reads
data = {}
runs = {}
eval_cam = {}

# %%
from sslib import notebook, paths, viz
from sslib.stages import ablation as stage

params = notebook.setup("ablation", params_path, data=data, runs=runs, eval_cam=eval_cam)  # by hand: scratch/
result = stage.run(params, reference)
print(f"{len(result.variants)} variants x {len(result.seeds)} seeds; splits {result.splits}; "
      f"reference {result.reference!r}")

# %% [markdown]
# ## The table
# Train split; `val_miou_*` on the val split; `cam_inside` / `cam_background`: the mean
# max-normalised CAM on the class's own pixels / on ground-truth background (val split).

# %%
result.table.round(2)

# %%
result.comparison.round(2)

# %%
print(result.markdown)

# %% [markdown]
# ## mIoU against the background threshold (mean over seeds, band: ± 1 std)

# %%
fig = viz.sweep_figure(result.sweeps, result.variants)
viz.save_figure(fig, paths.figure("ablation", "ablation_sweep"), dpi=90)

# %% [markdown]
# ## Per-class IoU at the best threshold (train split; bars: mean, ticks: ± 1 std)

# %%
fig = viz.per_class_figure(result.per_class, result.variants)
viz.save_figure(fig, paths.figure("ablation", "ablation_per_class"), dpi=90)

# %% [markdown]
# ## The same val images across the variants
# Each cell shows, for every pixel, the largest of the present classes' CAMs (max
# normalised); each row's title is the image's classes. Over-activation shows as
# heat on the background around (and away from) the objects.

# %%
fig = viz.cam_grid(stage.examples(params, n_images, overlay_seed), size=2.0)
viz.save_figure(fig, paths.figure("ablation", "ablation_cams"), dpi=90)
