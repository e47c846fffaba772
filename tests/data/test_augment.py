"""Seeded augmentations, checked against Pillow and against hand-worked cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from speechssl.data.augment import (
    center_crop_box, clip_indices, crop_and_flip, hflip, normalize, normalize_points, random_resized_crop_box,
    resized_crop, rotation_matrix, subsample_indices,
)
from speechssl.data.base import check_seed, item_generator, item_seed


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_item_seed_depends_on_every_part_only():
    base = item_seed(1, 2, 3)
    assert base == item_seed(1, 2, 3) and 0 <= base < 2**63
    assert len({base, item_seed(0, 2, 3), item_seed(1, 1, 3), item_seed(1, 2, 4), item_seed(3, 2, 1)}) == 5
    torch.manual_seed(0)
    a = torch.rand(4, generator=item_generator(5, 1, 9))
    torch.manual_seed(1)
    assert torch.equal(a, torch.rand(4, generator=item_generator(5, 1, 9)))
    with pytest.raises(ValueError, match="non-negative"):
        check_seed(-1)


def test_random_resized_crop_box_bounds_and_fallback():
    for seed in range(200):
        top, left, h, w = random_resized_crop_box(40, 30, (0.2, 0.9), (0.5, 2.0), _g(seed))
        assert 0 <= top and top + h <= 40 and 0 <= left and left + w <= 30
        # rounding each side moves area and aspect by at most about one pixel per side
        assert 0.2 * 1200 - (h + w) <= h * w <= 0.9 * 1200 + (h + w) + 1
        assert 0.5 * (h - 1) / h * 0.95 <= w / h <= 2.0 * h / (h - 1) * 1.05
    # aspect 2 on full area never fits a 10 x 10 image: the fallback clamps the ratio and centres
    assert random_resized_crop_box(10, 10, (1.0, 1.0), (2.0, 2.0), _g(0)) == (2, 0, 5, 10)
    assert random_resized_crop_box(10, 10, (1.0, 1.0), (1.0, 1.0), _g(0)) == (0, 0, 10, 10)
    tops = {random_resized_crop_box(64, 64, (0.1, 0.1), (1.0, 1.0), _g(s))[0] for s in range(100)}
    assert len(tops) > 20  # the position is drawn, not fixed
    with pytest.raises(ValueError, match="scale"):
        random_resized_crop_box(10, 10, (0.0, 1.0), (1.0, 1.0), _g(0))


@pytest.mark.parametrize("box,size", [((2, 3, 20, 25), 16), ((0, 0, 40, 30), 12), ((5, 5, 10, 8), 24),
                                      ((1, 2, 30, 28), 30), ((4, 4, 9, 9), 9)])
def test_resized_crop_matches_pillow(box, size):
    arr = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    x = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    top, left, h, w = box
    ref = Image.fromarray(arr).crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR)
    ref = torch.from_numpy(np.asarray(ref).astype(np.float32)).permute(2, 0, 1)
    ours = resized_crop(x, box, size) * 255
    assert (ours - ref).abs().max() <= 1.0  # Pillow rounds to uint8
    # a clip's frames are each cropped the same way
    clip = torch.stack([x, x.flip(0)], dim=1)  # (C, T=2, H, W)
    out = resized_crop(clip, box, size)
    assert torch.allclose(out[:, 0], resized_crop(x, box, size), atol=1e-6)
    assert torch.allclose(out[:, 1], resized_crop(x.flip(0), box, size), atol=1e-6)


def test_flip_center_crop_and_normalize():
    arr = np.random.default_rng(1).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    x = torch.from_numpy(arr).permute(2, 0, 1).float()
    assert torch.equal(hflip(x), torch.from_numpy(np.ascontiguousarray(arr[:, ::-1])).permute(2, 0, 1).float())
    assert center_crop_box(6, 8, 1.0) == (0, 1, 6, 6)
    assert center_crop_box(40, 30, 0.5) == (12, 7, 15, 15)
    out, crop = crop_and_flip(x, 6, None, crop_fraction=1.0)
    assert crop == (0, 1, 6, 6, 0) and torch.equal(out, x[:, :, 1:7])
    m, s = (0.5, 0.25, 0.0), (2.0, 1.0, 4.0)
    ref = (x - torch.tensor(m)[:, None, None]) / torch.tensor(s)[:, None, None]
    assert torch.allclose(normalize(x, m, s), ref)
    with pytest.raises(ValueError, match="one per channel"):
        normalize(x, (0.5,), None)


def test_crop_and_flip_draws_flip_after_the_box():
    x = torch.rand(3, 20, 20)
    flips = set()
    for seed in range(40):
        out, (top, left, h, w, flipped) = crop_and_flip(x, 8, _g(seed), flip=0.5)
        ref = resized_crop(x, (top, left, h, w), 8)
        assert torch.equal(out, hflip(ref) if flipped else ref)
        assert (top, left, h, w) == random_resized_crop_box(20, 20, (0.08, 1.0), (3 / 4, 4 / 3), _g(seed))
        flips.add(flipped)
    assert flips == {0, 1}
    assert all(crop_and_flip(x, 8, _g(s), flip=0.0)[1][4] == 0 for s in range(10))


def test_clip_indices():
    assert clip_indices(20, 4, 3, None).tolist() == [5, 8, 11, 14]  # span 10, centred
    assert clip_indices(3, 4, 1, None).tolist() == [0, 1, 2, 2]  # too short: repeat the last frame
    assert clip_indices(3, 4, 1, _g(0)).tolist() == [0, 1, 2, 2]
    starts = {int(clip_indices(12, 3, 2, _g(s))[0]) for s in range(200)}
    assert starts == set(range(8))  # span 5: every start 0..7 occurs
    idx = clip_indices(12, 3, 2, _g(7))
    assert (idx[1:] - idx[:-1]).tolist() == [2, 2]


def test_subsample_indices():
    assert subsample_indices(10, 4, None).tolist() == [0, 2, 5, 7]
    assert subsample_indices(3, 7, None).tolist() == [0, 1, 2, 0, 1, 2, 0]
    for seed in range(20):
        idx = subsample_indices(50, 16, _g(seed))
        assert len(set(idx.tolist())) == 16 and idx.max() < 50
        short = subsample_indices(5, 9, _g(seed))
        assert set(short.tolist()) == set(range(5)) and len(short) == 9


def test_rotations_are_rotations():
    for kind in ("z", "so3"):
        for seed in range(20):
            r = rotation_matrix(_g(seed), kind).double()
            assert torch.allclose(r @ r.T, torch.eye(3, dtype=torch.float64), atol=1e-6)
            assert abs(torch.det(r).item() - 1) < 1e-6
    r = rotation_matrix(_g(3), "z")
    assert torch.allclose(r @ torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, 1.0]))
    # uniform over SO(3): the mean rotation matrix is 0 (each entry has variance 1/3)
    mean = torch.stack([rotation_matrix(_g(s), "so3") for s in range(2000)]).mean(0)
    assert mean.abs().max() < 4 * math.sqrt(1 / 3 / 2000)


def test_normalize_points():
    p = torch.randn(100, 3, generator=_g(0)) * 5 + 3
    q = normalize_points(p)
    assert torch.allclose(q.mean(0), torch.zeros(3), atol=1e-5)
    assert abs(q.norm(dim=1).max().item() - 1) < 1e-6
