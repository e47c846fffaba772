"""Shared input handling of the feature transforms: one utterance or a padded batch."""
from __future__ import annotations

import torch


def as_batch(feats: torch.Tensor, lengths: torch.Tensor | None
             ) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(T, D)`` or ``(B, T, D)`` features → ``((B, T, D), (B,) valid frames, was_single)``, checked."""
    if not isinstance(feats, torch.Tensor) or not feats.is_floating_point():
        raise TypeError(f"expected a floating torch.Tensor of features, got "
                        f"{getattr(feats, 'dtype', type(feats).__name__)}")
    single = feats.dim() == 2
    if single:
        if lengths is not None:
            raise ValueError("lengths is only for a (B, T, D) batch")
        feats = feats.unsqueeze(0)
    elif feats.dim() != 3:
        raise ValueError(f"expected features (T, D) or (B, T, D), got shape {tuple(feats.shape)}")
    batch, frames = feats.shape[:2]
    if lengths is None:
        lengths = torch.full((batch,), frames, dtype=torch.long, device=feats.device)
    else:
        lengths = torch.as_tensor(lengths, device=feats.device).long()
        if lengths.shape != (batch,) or (batch and (int(lengths.min()) < 0 or int(lengths.max()) > frames)):
            raise ValueError(f"lengths must be ({batch},) values in [0, {frames}], got {lengths.tolist()}")
    return feats, lengths, single
