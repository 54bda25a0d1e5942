"""CAM inference (sslib.cam): multi-scale sums, normalisation, batching, the npz format."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sslib.cam import (cam_path, load_cam, make_cams, multiscale_cams, normalize_present, save_cam,
                       shard, strided_size)
from sslib.io import DataError


class PoolNet(nn.Module):
    """CAM logits = 16x16 average pool of a fixed 1x1 conv of the image (stride 16, like CAMNet)."""

    def __init__(self, c: int = 3):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(c, 3, 1, 1, generator=g))

    def forward(self, x):
        x = F.pad(x, (0, -x.shape[-1] % 16, 0, -x.shape[-2] % 16))
        cams = F.avg_pool2d(F.conv2d(x, self.w), 16)
        return cams.mean((2, 3)), cams


def test_strided_size():
    assert strided_size((128, 128), 4) == (32, 32)
    assert strided_size((37, 50), 4) == (10, 13)
    assert strided_size((37, 50), 16) == (3, 4)


def test_single_scale_without_flip_is_the_resized_relu_map():
    net = PoolNet().eval()
    x = torch.randn(2, 3, 37, 50)
    strided, high = multiscale_cams(net, x, scales=[1.0], flip=False)
    cams = F.relu(net(x)[1])                                          # (2, 3, 3, 4)
    assert strided.shape == (2, 3, 10, 13) and high.shape == (2, 3, 37, 50)
    want = F.interpolate(cams, size=(10, 13), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(strided, want)
    # high-res: upsampled to the 16-aligned size 48 x 64, then cropped at the top left
    up = F.interpolate(cams, size=(48, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(high, up[..., :37, :50])


def test_flip_adds_the_flipped_back_map_and_scales_add():
    net = PoolNet().eval()
    x = torch.randn(1, 3, 32, 48)
    one, _ = multiscale_cams(net, x, scales=[1.0], flip=False)
    mirrored, _ = multiscale_cams(net, x.flip(-1), scales=[1.0], flip=False)
    both, _ = multiscale_cams(net, x, scales=[1.0], flip=True)
    torch.testing.assert_close(both, one + mirrored.flip(-1))
    half, _ = multiscale_cams(net, x, scales=[0.5], flip=True)
    two, _ = multiscale_cams(net, x, scales=[1.0, 0.5], flip=True)
    torch.testing.assert_close(two, both + half)


def test_batching_does_not_change_the_maps():
    net = PoolNet().eval()
    x = torch.randn(3, 3, 40, 40)
    s, h = multiscale_cams(net, x, scales=[1.0, 0.5, 1.5])
    for i in range(3):
        si, hi = multiscale_cams(net, x[i:i + 1], scales=[1.0, 0.5, 1.5])
        torch.testing.assert_close(s[i:i + 1], si)
        torch.testing.assert_close(h[i:i + 1], hi)


def test_normalize_present_keeps_present_classes_divided_by_their_max():
    maps = torch.zeros(4, 2, 2)
    maps[1] = torch.tensor([[0.0, 2.0], [1.0, 4.0]])
    maps[3] = torch.tensor([[3.0, 0.0], [0.0, 0.0]])
    keys, m = normalize_present(maps, torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert keys.tolist() == [1, 3]
    torch.testing.assert_close(m[0], torch.tensor([[0.0, 2.0], [1.0, 4.0]]) / (4 + 1e-5))
    torch.testing.assert_close(m[1], torch.tensor([[3.0, 0.0], [0.0, 0.0]]) / (3 + 1e-5))
    keys, m = normalize_present(maps, torch.zeros(4))
    assert keys.numel() == 0 and m.shape == (0, 2, 2)


def test_save_load_round_trip(tmp_path):
    keys = np.array([2, 5])
    cam = np.random.default_rng(0).random((2, 10, 13)).astype(np.float32)
    high = np.random.default_rng(1).random((2, 37, 50)).astype(np.float32)
    p = tmp_path / "a" / "img.npz"
    save_cam(p, torch.as_tensor(keys), cam, high)
    out = load_cam(p, size=(37, 50))
    assert out["keys"].tolist() == [2, 5] and out["keys"].dtype == np.int64
    np.testing.assert_allclose(out["cam"], cam, atol=5e-4)
    np.testing.assert_allclose(out["high_res"], high, atol=5e-4)
    assert [f.name for f in p.parent.iterdir()] == ["img.npz"]    # no temporary file left


def test_load_cam_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.npz: CAM file missing"):
        load_cam(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz: not a readable CAM file"):
        load_cam(bad)
    p = tmp_path / "ok.npz"
    save_cam(p, np.array([0]), np.zeros((1, 10, 13)), np.zeros((1, 37, 50)))
    with pytest.raises(DataError, match="ok.npz: high_res is"):
        load_cam(p, size=(40, 50))
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, keys=np.array([0, 1], np.int16), cam=np.zeros((1, 10, 13)), high_res=np.zeros((1, 37, 50)))
    with pytest.raises(DataError, match="wrong.npz: inconsistent CAM file"):
        load_cam(wrong)
    obj = tmp_path / "obj.npz"
    np.savez(obj, keys=np.array([None], dtype=object), cam=np.zeros((1, 1, 1)), high_res=np.zeros((1, 1, 1)))
    with pytest.raises(DataError, match="obj.npz"):                # pickled arrays are refused
        load_cam(obj)


def test_shard_splits_the_images_disjointly():
    parts = [shard(11, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(11)) and parts[1] == [1, 4, 7, 10]


class ListData:
    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def test_make_cams_batched_equals_one_by_one(tmp_path):
    g = torch.Generator().manual_seed(0)
    sizes = [(32, 48), (32, 48), (32, 48), (40, 40), (32, 48)]
    samples = [{"name": f"im{i}", "image": torch.randn(3, *s, generator=g),
                "label": torch.tensor([1.0, 0.0, 1.0]) if i % 2 else torch.tensor([0.0, 1.0, 0.0])}
               for i, s in enumerate(sizes)]
    net = PoolNet().eval()
    ds = ListData(samples)
    assert make_cams(net, ds, tmp_path / "a", "train", scales=[1.0, 0.5], batch_size=1, progress=False) == 5
    make_cams(net, ds, tmp_path / "b", "train", scales=[1.0, 0.5], batch_size=2, progress=False)
    for s in samples:
        a = load_cam(cam_path(tmp_path / "a", "train", s["name"]), size=tuple(s["image"].shape[1:]))
        b = load_cam(cam_path(tmp_path / "b", "train", s["name"]))
        assert a["keys"].tolist() == torch.nonzero(s["label"])[:, 0].tolist() == b["keys"].tolist()
        np.testing.assert_allclose(a["high_res"], b["high_res"], atol=1e-3)
        np.testing.assert_allclose(a["high_res"].max((1, 2)), 1.0, atol=1e-3)  # per-class max normalised
    # a rank makes only its share
    assert make_cams(net, ds, tmp_path / "c", "val", scales=[1.0], rank=1, world=2, progress=False) == 2
    assert sorted(p.stem for p in (tmp_path / "c" / "val").iterdir()) == ["im1", "im3"]
