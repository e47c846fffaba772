"""View alignment: the overlap box by hand, and a pixel of the aligned maps is one image point in both views
(views made by the real augmentation from an image whose pixels hold their own coordinates)."""
from __future__ import annotations

import torch

from speechssl.data.image_augment import ViewAugment
from speechssl.nn.view_align import align_to_overlap, overlap_boxes


def test_overlap_boxes_by_hand():
    # view 1: rows 0..10, cols 0..10; view 2: rows 5..15, cols 2..12, mirrored -> overlap rows 5..10, cols 2..10
    crops = torch.tensor([[[0, 0, 10, 10, 0], [5, 2, 10, 10, 1]],
                          [[0, 0, 4, 4, 0], [6, 6, 4, 4, 0]]], dtype=torch.float32)
    boxes, valid = overlap_boxes(crops)
    torch.testing.assert_close(boxes[0, 0], torch.tensor([0.2, 0.5, 1.0, 1.0]))
    # in view 2's own frame x is 0..0.8, mirrored to 0.2..1.0; y is 0..0.5
    torch.testing.assert_close(boxes[1, 0], torch.tensor([0.2, 0.0, 1.0, 0.5]))
    assert valid.tolist() == [True, False]


def _coordinate_image(h: int, w: int) -> torch.Tensor:
    """(3, h, w): channel 0 the column centre j + 0.5, channel 1 the row centre i + 0.5, scaled into [0, 1]."""
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    return torch.stack([xs / 64.0, ys / 64.0, torch.zeros(h, w)])


def test_aligned_pixels_are_the_same_image_point_in_both_views():
    image = _coordinate_image(24, 28)
    # no colour change; views of 48 px from crops of <= 28 px: bilinear upsampling keeps a linear ramp exactly
    # except within half a source pixel of the crop's edge
    aug = ViewAugment(size=48, scale=(0.2, 0.9), flip=0.5, jitter_prob=0.0, grey_prob=0.0)
    out_h, out_w = 12, 12
    checked, flips = 0, set()
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        v1, r1 = aug(image, g)
        v2, r2 = aug(image, g, constraint=tuple(int(x) for x in r1[:4]))
        crops = torch.tensor([r1, r2])[None]  # (1, 2, 8)
        boxes, valid = overlap_boxes(crops)
        if not bool(valid[0]):
            continue
        flips.add((r1[4], r2[4]))
        a1 = align_to_overlap(v1[None], boxes[0], crops[:, 0, 4], (out_h, out_w))[0] * 64.0  # (3, H', W')
        a2 = align_to_overlap(v2[None], boxes[1], crops[:, 1, 4], (out_h, out_w))[0] * 64.0
        top = max(r1[0], r2[0]); left = max(r1[1], r2[1])
        bottom = min(r1[0] + r1[2], r2[0] + r2[2]); right = min(r1[1] + r1[3], r2[1] + r2[3])
        ex = left + (torch.arange(out_w) + 0.5) / out_w * (right - left)  # image x of each bin column
        ey = top + (torch.arange(out_h) + 0.5) / out_h * (bottom - top)
        inner_x = torch.ones(out_w, dtype=torch.bool)
        inner_y = torch.ones(out_h, dtype=torch.bool)
        for r in (r1, r2):  # away from every crop edge by more than half a source pixel
            inner_x &= (ex > r[1] + 0.75) & (ex < r[1] + r[3] - 0.75)
            inner_y &= (ey > r[0] + 0.75) & (ey < r[0] + r[2] - 0.75)
        inner = inner_y[:, None] & inner_x[None, :]
        for a in (a1, a2):
            assert float((a[0] - ex[None, :]).abs().max()) < 0.5 + 1e-4  # everywhere: within the edge clamp
            assert float((a[1] - ey[:, None]).abs().max()) < 0.5 + 1e-4
            torch.testing.assert_close(a[0][inner], ex[None, :].expand(out_h, out_w)[inner], atol=2e-4, rtol=0)
            torch.testing.assert_close(a[1][inner], ey[:, None].expand(out_h, out_w)[inner], atol=2e-4, rtol=0)
        torch.testing.assert_close(a1[:2][:, inner], a2[:2][:, inner], atol=4e-4, rtol=0)
        checked += 1
    assert checked >= 30 and len(flips) == 4, (checked, flips)  # every flip combination was exercised


def test_mirrored_view_is_mirrored_back():
    x = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 2, 8).contiguous()
    box = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    same = align_to_overlap(x, box, torch.tensor([False]))
    back = align_to_overlap(x, box, torch.tensor([True]))
    torch.testing.assert_close(same, x)
    torch.testing.assert_close(back, x.flip(-1))
