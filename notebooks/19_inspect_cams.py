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
# without edits; change `names` to look at other images.

# %% tags=["parameters"]
params_path = "params.yaml"  # relative to the project root
split = "val"  # "train" / "val" (params' data.train_split / data.val_split) or a split name
names = []  # image names; empty: n_images evenly spaced images of the split
n_images = 2
seed = 0
variants = []  # empty: all of train.variants

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

from sslib import config, eval_cam, notebook
from sslib.cam import cam_path, load_cam
from sslib.data import build_dataset
from sslib.data.transforms import EvalTransform
from sslib.losses import alignment_maps
from sslib.superpixels import boundaries
from sslib.viz import denormalize, heat_overlay, label_image

notebook.enter_project_root()
params = config.load(params_path)
params = notebook.route_outputs(params, "inspect_cams")  # writes nothing but this notebook
split = {"train": params.data.train_split, "val": params.data.val_split}.get(split, split)
variants = list(variants) or list(params.train.variants)
ds = build_dataset(params.data, split, transform=EvalTransform(), superpixel_dir=params.superpixels.out_dir)
raw = build_dataset(params.data, split)
missing = [n for n in names if n not in ds.names]
if missing:
    raise ValueError(f"names: not in split {split!r}: {missing}")
index = [ds.names.index(n) for n in names] or list(np.linspace(0, len(ds) - 1, n_images, dtype=int))
models = {v: eval_cam.load_trained(params, v, seed) for v in variants}
print(f"split {split}, images {[ds.names[i] for i in index]}, variants {variants}, seed {seed}")

# %%
def show(i: int) -> None:
    s, r = ds[i], raw[i]
    img = r["image"]
    keys = np.flatnonzero(s["label"].numpy())
    cls = [ds.classes[k] for k in keys]
    over = img.copy()
    over[boundaries(s["superpixels"].numpy())] = (255, 255, 0)
    cols = max(3, 1 + 3 * len(keys))
    fig, axes = plt.subplots(1 + len(variants), cols, figsize=(1.9 * cols, 1.9 * (1 + len(variants))),
                             squeeze=False)
    for a, pic, title in zip(axes[0], [img, label_image(r["mask"].numpy()), over],
                             [s["name"], "ground truth: " + ", ".join(cls), "superpixels"]):
        a.imshow(pic)
        a.set_title(title, fontsize=7)
    for row, v in zip(axes[1:], variants):
        net, decoder, _ = models[v]
        vc = config.variant_config(params, v)
        stored = load_cam(cam_path(eval_cam.cam_dir(params, v, seed), split, s["name"]))
        with torch.no_grad():
            _, cams = net(s["image"][None])
            maps = alignment_maps(cams, s["superpixels"][None], s["label"][None],
                                  vc.align_threshold, vc.align_erosion)
            rec = decoder(cams) if decoder is not None else None
        row[0].set_ylabel(v, fontsize=8)
        row[0].imshow(denormalize(rec[0], tanh=True)[:img.shape[0], :img.shape[1]] if rec is not None
                      else np.full_like(img, 255))
        row[0].set_title(f"{v}: reconstruction" if rec is not None else f"{v}: no decoder", fontsize=7)
        for j, (k, m) in enumerate(zip(stored["keys"], stored["high_res"])):
            row[1 + j].imshow(heat_overlay(img, m))
            row[1 + j].set_title(f"CAM {ds.classes[k]}", fontsize=7)
        h2, w2 = maps["cam"].shape[-2:]
        small = img[::2, ::2][:h2, :w2]
        for j, k in enumerate(keys):
            a, b = row[1 + len(keys) + 2 * j], row[2 + len(keys) + 2 * j]
            a.imshow(heat_overlay(small, maps["averaged"][0, k].numpy()))
            a.set_title(f"sp-averaged {ds.classes[k]}", fontsize=7)
            b.imshow(heat_overlay(small, maps["target"][0, k].numpy()))
            b.contour(maps["reliable"][0, k].numpy(), levels=[0.5], colors="white", linewidths=0.8)
            b.set_title("target (white: reliable)", fontsize=7)
    for a in axes.flat:
        a.set_xticks([])
        a.set_yticks([])
        if not a.images:
            a.axis("off")
    plt.tight_layout()
    plt.show()


for i in index:
    show(i)
