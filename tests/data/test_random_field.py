"""Random field augmentations: identity at zero strength, field covariance against the kernel's,
warps worked by hand, colour fields against the global operations and their ranges, seeding."""
from __future__ import annotations

import math

import pytest
import torch

from speechssl.data.image_augment import (ViewAugment, adjust_brightness, adjust_contrast, adjust_hue,
                                          adjust_saturation)
from speechssl.data.random_field import (RandomFieldAugment, RandomFieldConfig, RandomFieldViewAugment,
                                         affine_coordinates, apply_color_fields, config_from_overrides,
                                         field_correlation, gaussian_random_field, mild, random_field_setting,
                                         strong, warp)


def _image(c: int = 3, h: int = 12, w: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.rand(c, h, w, generator=torch.Generator().manual_seed(seed))


def _zeros(h: int, w: int) -> torch.Tensor:
    return torch.zeros(h, w)


@pytest.mark.parametrize("channels", [1, 3])
def test_zero_strength_fields_are_the_identity_exactly(channels):
    x = _image(channels)
    cfg = RandomFieldConfig(affine_prob=1.0, color_prob=1.0)  # both families "applied", every amplitude 0
    out, record = RandomFieldAugment(cfg)(x, torch.Generator().manual_seed(3))
    assert torch.equal(out, x) and record == [0.0, 0.0]
    # the warp itself, at zero fields, copies every pixel bit for bit
    z = _zeros(12, 10)
    assert torch.equal(warp(x, affine_coordinates(z, z, z, z, z)), x)
    # unit factors through the brightness, contrast and saturation formulas
    ones = torch.ones(12, 10)
    assert torch.equal(apply_color_fields(x, brightness=ones, contrast=ones, saturation=ones), x)


def test_field_is_stationary_with_the_kernels_covariance():
    sigma, n = 2.0, 1500
    g = gaussian_random_field(16, 16, sigma, torch.Generator().manual_seed(0), count=n).double()  # (n, 16, 16)
    assert g.shape == (n, 16, 16)
    for dy, dx in [(0, 0), (0, 1), (1, 0), (0, 2), (1, 1), (2, 3), (0, 6)]:
        a = g[:, 4:10, 4:10]
        b = g[:, 4 + dy:10 + dy, 4 + dx:10 + dx]
        emp = float((a * b).mean())  # zero-mean fields
        assert emp == pytest.approx(field_correlation(sigma, dy, dx), abs=0.03), (dy, dx)
    # the discrete kernel's autocorrelation is close to the continuous Gaussian's exp(-d² / 4σ²)
    for d in (1, 2, 4):
        assert field_correlation(sigma, 0, d) == pytest.approx(math.exp(-d * d / (4 * sigma ** 2)), abs=0.01)
    assert field_correlation(sigma, 0, 0) == pytest.approx(1.0)
    assert field_correlation(sigma, 0, 13) == 0.0  # beyond 2r, r = ceil(3σ) = 6


def test_displacement_field_covariance_is_amplitude_squared_times_kernel():
    side, amp = 16, 0.05  # translation amplitude 5 % of the side: 0.8 px
    cfg = RandomFieldConfig(affine_prob=1.0, affine_smoothness=0.125, translation=amp, clip=math.inf)
    aug = RandomFieldAugment(cfg)
    gen = torch.Generator().manual_seed(1)
    z = _zeros(side, side)
    base = affine_coordinates(z, z, z, z, z)
    disp = []
    for _ in range(800):
        _, affine, _, _ = aug.draw(side, side, gen)
        q = affine_coordinates(affine["rotation"], affine["scale"], affine["shear"], affine["translation_x"],
                               affine["translation_y"])
        disp.append(q - base)  # (2, H, W) pixels
    d = torch.stack(disp).double()  # (n, 2, H, W)
    sigma_px = 0.125 * side
    var = (amp * side) ** 2
    for dy, dx in [(0, 0), (0, 2), (3, 0)]:
        emp = float((d[:, :, 4:10, 4:10] * d[:, :, 4 + dy:10 + dy, 4 + dx:10 + dx]).mean())
        assert emp == pytest.approx(var * field_correlation(sigma_px, dy, dx), rel=0.12, abs=0.02 * var)
    cross = float((d[:, 0] * d[:, 1]).mean())  # x and y translations are independent fields
    assert abs(cross) < 0.1 * var


def test_integer_translation_is_a_pixel_shift():
    x = torch.arange(2 * 4 * 5, dtype=torch.float32).view(2, 4, 5)
    z = _zeros(4, 5)
    out = warp(x, affine_coordinates(z, z, z, z + 1.0, z))  # sample from x + 1: content moves left
    expect = torch.cat([x[:, :, 1:], x[:, :, -1:]], dim=2)  # border replicated
    assert torch.equal(out, expect)
    out = warp(x, affine_coordinates(z, z, z, z, z - 2.0))  # sample from y - 2: content moves down
    expect = torch.cat([x[:, :1], x[:, :1], x[:, :2]], dim=1)
    assert torch.equal(out, expect)
    # half a pixel: the mean of the two neighbours
    out = warp(x, affine_coordinates(z, z, z, z + 0.5, z))
    assert torch.allclose(out[:, :, :4], (x[:, :, :4] + x[:, :, 1:]) / 2)


def test_constant_rotation_and_scale_fields_are_the_global_maps():
    x = torch.arange(9, dtype=torch.float32).view(1, 3, 3)
    z = _zeros(3, 3)
    out = warp(x, affine_coordinates(z + math.pi / 2, z, z, z, z))
    # q = c + R(π/2)(p - c): q_x = c - (y - c), q_y = c + (x - c), so out[y, x] = x[x, 2 - y]
    expect = torch.tensor([[x[0, c, 2 - r] for c in range(3)] for r in range(3)]).view(1, 3, 3)
    assert torch.allclose(out, expect, atol=1e-6)
    # zoom e^{ln 2} about the centre of a 5-wide row: q_x = 2 + 2 (x - 2), clamped to the border
    row = torch.arange(5, dtype=torch.float32).view(1, 1, 5)
    z = _zeros(1, 5)
    out = warp(row, affine_coordinates(z, z + math.log(2.0), z, z, z))
    assert torch.allclose(out, torch.tensor([[[0.0, 0.0, 2.0, 4.0, 4.0]]]), atol=1e-6)
    # shear: x += h (y - c_y); rows above/below the centre slide opposite ways
    img = torch.arange(15, dtype=torch.float32).view(1, 3, 5)
    z = _zeros(3, 5)
    out = warp(img, affine_coordinates(z, z, z + 1.0, z, z))
    assert torch.equal(out[0, 1], img[0, 1])
    assert torch.equal(out[0, 2, :4], img[0, 2, 1:]) and torch.equal(out[0, 0, 1:], img[0, 0, :4])


def test_constant_colour_fields_equal_the_global_operations():
    x = _image(3, 6, 7, seed=2)
    ones = torch.ones(6, 7)
    assert torch.allclose(apply_color_fields(x, brightness=1.3 * ones), adjust_brightness(x, 1.3), atol=1e-6)
    assert torch.allclose(apply_color_fields(x, contrast=0.6 * ones), adjust_contrast(x, 0.6), atol=1e-6)
    assert torch.allclose(apply_color_fields(x, saturation=1.7 * ones), adjust_saturation(x, 1.7), atol=1e-6)
    assert torch.allclose(apply_color_fields(x, hue=0.2 * ones), adjust_hue(x, 0.2), atol=1e-6)
    # a field that differs per pixel acts per pixel: left half brightened, right half unchanged
    f = torch.ones(6, 7)
    f[:, :3] = 1.2
    out = apply_color_fields(x, brightness=f)
    assert torch.allclose(out[:, :, :3], (1.2 * x[:, :, :3]).clamp(0, 1)) and torch.equal(out[:, :, 3:], x[:, :, 3:])


def test_colour_fields_stay_in_their_ranges():
    cfg = RandomFieldConfig(color_prob=1.0, brightness=0.8, contrast=0.5, saturation=0.8, hue=0.3, clip=2.0)
    aug = RandomFieldAugment(cfg)
    gen = torch.Generator().manual_seed(5)
    for _ in range(20):
        _, _, applied, col = aug.draw(16, 16, gen)
        assert applied
        for name in ("brightness", "contrast", "saturation"):
            amp = getattr(cfg, name)
            assert float(col[name].min()) >= math.exp(-2.0 * amp) - 1e-6
            assert float(col[name].max()) <= math.exp(2.0 * amp) + 1e-6
        assert float(col["hue"].abs().max()) <= 0.5
        assert float(col["hue"].abs().max()) > 0.1  # the hue field really varies at this amplitude
    for setting in (mild(), strong()):
        out, _ = RandomFieldAugment(setting)(_image(3, 32, 32), torch.Generator().manual_seed(0))
        assert out.shape == (3, 32, 32) and float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_seeding_and_draw_order():
    x = _image(3, 16, 16)
    aug = RandomFieldAugment(strong())
    a, _ = aug(x, torch.Generator().manual_seed(7))
    b, _ = aug(x, torch.Generator().manual_seed(7))
    c, _ = aug(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # the draws don't depend on the probabilities: the generator ends in the same state
    after = []
    for p in (0.0, 1.0):
        g = torch.Generator().manual_seed(7)
        RandomFieldAugment(RandomFieldConfig(affine_prob=p, color_prob=p, rotation=0.1, hue=0.1))(x, g)
        after.append(float(torch.rand((), generator=g)))
    assert after[0] == after[1]


def test_view_pipeline_then_fields_keeps_the_views_draws():
    x = _image(3, 40, 40)
    view = ViewAugment(size=16)
    both = RandomFieldViewAugment(view, RandomFieldAugment(strong()))
    v0, r0 = view(x, torch.Generator().manual_seed(4))
    v1, r1 = both(x, torch.Generator().manual_seed(4))
    assert r1[:8] == r0 and len(r1) == 10 and both.size == 16
    assert not torch.equal(v0, v1) or r1[8:] == [0.0, 0.0]


def test_settings_and_config_errors():
    assert random_field_setting("none") == RandomFieldConfig()
    assert random_field_setting("mild").rotation < random_field_setting("strong").rotation
    assert random_field_setting("mild").affine_smoothness > random_field_setting("strong").affine_smoothness
    with pytest.raises(ValueError, match="unknown random field setting 'wild'"):
        random_field_setting("wild")
    with pytest.raises(ValueError, match="random_field.affine_prob"):
        RandomFieldConfig(affine_prob=1.5).validate()
    with pytest.raises(ValueError, match="random_field.hue"):
        RandomFieldConfig(hue=-0.1).validate()
    with pytest.raises(ValueError, match="random_field.color_smoothness"):
        RandomFieldConfig(color_smoothness=0).validate()
    assert config_from_overrides(mild(), ["rotation=0.3"]).rotation == 0.3
    with pytest.raises(ValueError, match="NAME=VALUE"):
        config_from_overrides(mild(), ["spin=1"])
    with pytest.raises(ValueError, match="expected a float image"):
        RandomFieldAugment(mild())(torch.zeros(2, 4, 4), torch.Generator())
