"""Geometric correspondence of two augmented views: their shared region, aligned in both.

Two views of one image are crops ``(top, left, height, width)`` in the image's pixels, each
resized to the view's side and maybe mirrored (the records of
:class:`speechssl.data.image_augment.OverlappingViewsDataset`). Their overlap is the box
``[max(top_1, top_2), min(top_1 + h_1, top_2 + h_2)) x [max(left_1, left_2), min(...))`` of the
image. In view ``v`` that box is, as fractions of the view's side (SlotCon's ``_clip_coords``),

    x_1 = (X_1 - left_v) / w_v,  x_2 = (X_2 - left_v) / w_v   (the same for y with top, h),

and, when the view was mirrored, ``(x_1, x_2) ← (1 - x_2, 1 - x_1)`` (its
``CustomRandomHorizontalFlip``).

:func:`align_to_overlap` resamples a map of a view (features or prototype scores, ``(B, C, h,
w)``, covering the whole view) over that box to an ``(H', W')`` grid, then mirrors it back when
the view was mirrored (SlotCon's ``invaug``). Bin ``(i, j)`` holds the bilinear sample at the bin
centre ``x_1 + (j + 0.5) / W' · (x_2 - x_1)`` (``y`` alike) of the map, whose cell ``c`` covers
``[c / w, (c + 1) / w)``; so in both views' aligned maps bin ``(i, j)`` is the image point
``(Y_1 + (i + 0.5) / H' · (Y_2 - Y_1), X_1 + (j + 0.5) / W' · (X_2 - X_1))``. This is
``torchvision.ops.roi_align(aligned=True)`` with one sample per bin, which is its adaptive
sampling whenever the box is no larger than the output grid (always so for ``(H', W') = (h,
w)``, SlotCon's choice); samples within half a cell of the border clamp to the edge cell, as
there.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["overlap_boxes", "align_to_overlap"]


def overlap_boxes(crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two views' shared box in each view's own frame.

    Args:
        crops: ``(B, 2, R)`` crop records, ``R >= 5``: ``top, left, height, width, flipped``
            (image pixels; flipped 0/1) of view 1 and view 2.

    Returns:
        ``boxes (2, B, 4)`` float32 ``(x_1, y_1, x_2, y_2)`` fractions of view ``v``'s side, mirrored
        for a mirrored view (module docstring), and ``valid (B,)`` bool: the overlap is not empty.
        An empty overlap gives a degenerate box; leave those items out of any aligned loss.
    """
    if crops.dim() != 3 or crops.shape[1] != 2 or crops.shape[2] < 5:
        raise ValueError(f"expected crop records (B, 2, >=5) [top, left, height, width, flipped, ...], "
                         f"got {tuple(crops.shape)}")
    c = crops.double()
    top, left, h, w, flip = (c[..., k] for k in range(5))  # (B, 2) each
    y1 = torch.maximum(top[:, 0], top[:, 1])
    x1 = torch.maximum(left[:, 0], left[:, 1])
    y2 = torch.minimum(top[:, 0] + h[:, 0], top[:, 1] + h[:, 1])
    x2 = torch.minimum(left[:, 0] + w[:, 0], left[:, 1] + w[:, 1])
    valid = (y2 > y1) & (x2 > x1)
    boxes = []
    for v in range(2):
        bx1, bx2 = (x1 - left[:, v]) / w[:, v], (x2 - left[:, v]) / w[:, v]
        by1, by2 = (y1 - top[:, v]) / h[:, v], (y2 - top[:, v]) / h[:, v]
        mirrored = flip[:, v] > 0.5
        bx1, bx2 = torch.where(mirrored, 1.0 - bx2, bx1), torch.where(mirrored, 1.0 - bx1, bx2)
        boxes.append(torch.stack([bx1, by1, bx2, by2], dim=1))  # (B, 4)
    return torch.stack(boxes).float(), valid


def align_to_overlap(x: torch.Tensor, boxes: torch.Tensor, flipped: torch.Tensor,
                     size: Sequence[int] | None = None) -> torch.Tensor:
    """Resample each map over its box and undo its mirroring (module docstring).

    Args:
        x: ``(B, C, h, w)`` maps covering whole views.
        boxes: ``(B, 4)`` ``(x_1, y_1, x_2, y_2)`` fractions (:func:`overlap_boxes`, one view).
        flipped: ``(B,)`` whether each view was mirrored (bool or 0/1).
        size: output ``(H', W')`` (default ``(h, w)``).

    Returns:
        ``(B, C, H', W')`` in ``x``'s dtype; bin ``(i, j)`` is the same image point for every view.
    """
    if x.dim() != 4 or boxes.shape != (x.shape[0], 4) or flipped.shape != (x.shape[0],):
        raise ValueError(f"expected x (B, C, h, w), boxes (B, 4) and flipped (B,), got {tuple(x.shape)}, "
                         f"{tuple(boxes.shape)} and {tuple(flipped.shape)}")
    B = x.shape[0]
    out_h, out_w = (int(x.shape[2]), int(x.shape[3])) if size is None else (int(size[0]), int(size[1]))
    b = boxes.to(device=x.device, dtype=torch.float32)
    fy = (torch.arange(out_h, device=x.device, dtype=torch.float32) + 0.5) / out_h  # (H',)
    fx = (torch.arange(out_w, device=x.device, dtype=torch.float32) + 0.5) / out_w  # (W',)
    u = b[:, 0:1] + fx[None] * (b[:, 2:3] - b[:, 0:1])  # (B, W') fractions of the view's width
    v = b[:, 1:2] + fy[None] * (b[:, 3:4] - b[:, 1:2])  # (B, H')
    grid = torch.stack([(2 * u - 1)[:, None, :].expand(B, out_h, out_w),
                        (2 * v - 1)[:, :, None].expand(B, out_h, out_w)], dim=-1)  # (B, H', W', 2): (x, y)
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    mirrored = flipped.to(x.device).bool().view(B, 1, 1, 1)
    return torch.where(mirrored, out.flip(-1), out).to(x.dtype)  # (B, C, H', W')
