"""speechssl.data.image_augment: colour operations against hand-computed values and colorsys, blur kernels,
seeded view pipelines (same generator → same view, draws independent of outcomes), the multi-view dataset."""
from __future__ import annotations

import colorsys
import math

import pytest
import torch

from speechssl.data.example import write_example_images
from speechssl.data.image_augment import (MultiViewImageDataset, ViewAugment, adjust_brightness, adjust_contrast,
                                          adjust_hue, adjust_saturation, apply_jitter, blur_kernel_size,
                                          color_jitter, gaussian_blur, gaussian_kernel1d, grayscale, hsv_to_rgb,
                                          jitter_params, rgb_to_hsv)


def _pixel(r: float, g: float, b: float) -> torch.Tensor:
    return torch.tensor([r, g, b], dtype=torch.float32).view(3, 1, 1)


def test_grayscale_is_the_601_luma():
    x = torch.cat([_pixel(1, 0, 0), _pixel(0, 1, 0), _pixel(0, 0, 1), _pixel(0.5, 0.2, 0.8)], dim=2)  # (3, 1, 4)
    y = grayscale(x)
    expected = [0.2989, 0.587, 0.114, 0.2989 * 0.5 + 0.587 * 0.2 + 0.114 * 0.8]
    torch.testing.assert_close(y[0, 0], torch.tensor(expected))
    assert torch.equal(y[0], y[1]) and torch.equal(y[1], y[2])
    grey = torch.rand(1, 4, 4)
    assert torch.equal(grayscale(grey), grey)


def test_brightness_contrast_saturation_by_hand():
    x = torch.tensor([[[0.2, 0.6]], [[0.4, 0.4]], [[0.6, 0.2]]])  # (3, 1, 2)
    torch.testing.assert_close(adjust_brightness(x, 1.5), (x * 1.5).clamp(0, 1))
    torch.testing.assert_close(adjust_brightness(x, 2.0)[0, 0, 1], torch.tensor(1.0))  # 1.2 clamped
    luma = [0.2989 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6, 0.2989 * 0.6 + 0.587 * 0.4 + 0.114 * 0.2]
    mean = sum(luma) / 2
    torch.testing.assert_close(adjust_contrast(x, 0.5), 0.5 * x + 0.5 * mean)
    torch.testing.assert_close(adjust_contrast(x, 0.0), torch.full_like(x, mean))
    sat = adjust_saturation(x, 0.25)
    for j in range(2):
        torch.testing.assert_close(sat[:, 0, j], 0.25 * x[:, 0, j] + 0.75 * luma[j])
    torch.testing.assert_close(adjust_saturation(x, 0.0), grayscale(x))
    for fn in (adjust_brightness, adjust_contrast, adjust_saturation):
        torch.testing.assert_close(fn(x, 1.0), x)


def test_hsv_and_hue_agree_with_colorsys():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 5, 7, generator=gen)
    x[:, 0, 0] = torch.tensor([0.3, 0.3, 0.3])  # a grey pixel
    x[:, 0, 1] = torch.tensor([0.9, 0.9, 0.1])  # two equal maxima
    hsv = rgb_to_hsv(x)
    shifted = adjust_hue(x, 0.3)
    for i in range(5):
        for j in range(7):
            r, g, b = x[:, i, j].tolist()
            h, s, v = colorsys.rgb_to_hsv(r, g, b)
            torch.testing.assert_close(hsv[:, i, j], torch.tensor([h, s, v]), atol=1e-6, rtol=0)
            ref = colorsys.hsv_to_rgb((h + 0.3) % 1.0, s, v)
            torch.testing.assert_close(shifted[:, i, j], torch.tensor(ref), atol=1e-5, rtol=0)
    torch.testing.assert_close(hsv_to_rgb(hsv), x, atol=1e-6, rtol=0)
    # pure red turned a third of a turn is pure green
    torch.testing.assert_close(adjust_hue(_pixel(1, 0, 0), 1 / 3)[:, 0, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="hue delta"):
        adjust_hue(x, 0.7)


def test_gaussian_kernel_and_blur_by_hand():
    e = math.exp(-0.5)
    torch.testing.assert_close(gaussian_kernel1d(3, 1.0), torch.tensor([e, 1.0, e]) / (1 + 2 * e))
    k = gaussian_kernel1d(5, 0.7)
    delta = torch.zeros(1, 9, 9)
    delta[0, 4, 4] = 1.0
    torch.testing.assert_close(gaussian_blur(delta, 5, 0.7)[0, 2:7, 2:7], torch.outer(k, k))
    const = torch.full((3, 6, 6), 0.37)
    torch.testing.assert_close(gaussian_blur(const, 3, 1.5), const)
    # reflect padding: in a 1-D ramp along W the left pixel's mirror is pixel 1
    ramp = torch.arange(4.0).view(1, 1, 4).expand(1, 3, 4).clone()
    k3 = gaussian_kernel1d(3, 1.0)
    left = k3[0] * 1 + k3[1] * 0 + k3[2] * 1
    torch.testing.assert_close(gaussian_blur(ramp, 3, 1.0)[0, 1, 0], left)
    assert [blur_kernel_size(s) for s in (16, 32, 64, 224)] == [3, 3, 7, 23]
    with pytest.raises(ValueError, match="odd"):
        gaussian_kernel1d(4, 1.0)


def test_color_jitter_draws_then_applies_in_the_drawn_order():
    x = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(1))
    order, factors = jitter_params(torch.Generator().manual_seed(7), 0.4, 0.4, 0.4, 0.1)
    assert sorted(order) == [0, 1, 2, 3]
    b, c, s, h = factors
    assert 0.6 <= b <= 1.4 and 0.6 <= c <= 1.4 and 0.6 <= s <= 1.4 and -0.1 <= h <= 0.1
    y = color_jitter(x, torch.Generator().manual_seed(7), 0.4, 0.4, 0.4, 0.1)
    ref = x
    ops = {0: lambda z: adjust_brightness(z, b), 1: lambda z: adjust_contrast(z, c),
           2: lambda z: adjust_saturation(z, s), 3: lambda z: adjust_hue(z, h)}
    for i in order:
        ref = ops[i](ref)
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(apply_jitter(x, order, factors), ref)
    # zero strengths still draw (the stream stays aligned) and change nothing
    g = torch.Generator().manual_seed(3)
    torch.testing.assert_close(color_jitter(x, g, 0, 0, 0, 0), x)


def test_view_augment_is_a_function_of_the_generator():
    img = torch.rand(3, 40, 36, generator=torch.Generator().manual_seed(0))
    aug = ViewAugment(size=32, blur_prob=0.5)
    a, ra = aug(img, torch.Generator().manual_seed(5))
    b, rb = aug(img, torch.Generator().manual_seed(5))
    c, _ = aug(img, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and ra == rb and not torch.equal(a, c)
    assert a.shape == (3, 32, 32) and float(a.min()) >= 0 and float(a.max()) <= 1
    assert len(ra) == 8
    # the number of draws does not depend on the probabilities
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    ViewAugment(size=32, flip=0, jitter_prob=0, grey_prob=0, blur_prob=0)(img, g1)
    ViewAugment(size=32, flip=1, jitter_prob=1, grey_prob=1, blur_prob=1)(img, g2)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


def test_view_augment_with_everything_off_is_the_identity_and_each_step_is_applied():
    img = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    off = ViewAugment(size=16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0, jitter_prob=0, grey_prob=0, blur_prob=0)
    out, rec = off(img, torch.Generator().manual_seed(0))
    assert torch.equal(out, img) and rec == [0.0, 0.0, 16.0, 16.0, 0.0, 0.0, 0.0, 0.0]
    flip = ViewAugment(size=16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=1, jitter_prob=0, grey_prob=0, blur_prob=0)
    assert torch.equal(flip(img, torch.Generator().manual_seed(0))[0], img.flip(-1))
    grey = ViewAugment(size=16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0, jitter_prob=0, grey_prob=1, blur_prob=0)
    assert torch.equal(grey(img, torch.Generator().manual_seed(0))[0], grayscale(img))
    blur = ViewAugment(size=16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0, jitter_prob=0, grey_prob=0, blur_prob=1)
    out, rec = blur(img, torch.Generator().manual_seed(0))
    assert 0.1 <= rec[-1] <= 2.0
    torch.testing.assert_close(out, gaussian_blur(img, 3, rec[-1]))
    with pytest.raises(ValueError, match="grey_prob"):
        ViewAugment(grey_prob=1.5).validate()


def test_multi_view_dataset(tmp_path):
    write_example_images(tmp_path, per_split=3, min_side=24, max_side=32, seed=0)
    ds = MultiViewImageDataset(tmp_path / "train.tsv", view_augment=ViewAugment(size=16), views=2, seed=3)
    a, b = ds[1], ds[1]
    assert len(a["views"]) == 2 and a["views"][0].shape == (3, 16, 16) and a["crops"].shape == (2, 8)
    assert all(torch.equal(x, y) for x, y in zip(a["views"], b["views"]))
    assert not torch.equal(a["views"][0], a["views"][1])
    ds.set_epoch(2)
    assert not torch.equal(ds[1]["views"][0], a["views"][0])
    batch = ds.collater()([ds[0], ds[1], ds[2]])
    assert batch["views"][0].shape == (3, 3, 16, 16) and batch["crops"].shape == (3, 2, 8)
    ev = MultiViewImageDataset(tmp_path / "valid.tsv", view_augment=ViewAugment(size=16), augment=False,
                               crop_fraction=1.0)
    item = ev[0]
    assert item["image"].shape == (3, 16, 16) and "views" not in item
