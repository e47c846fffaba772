"""The wav2vec 2.0 contrastive objective with in-utterance distractors (Baevski et al. 2020).

For every masked frame ``t`` of utterance ``b``, the context vector ``c_t`` (the encoder output,
projected) must pick its own quantized target ``q_t`` among ``1 + K`` candidates: ``q_t`` and
``K`` distractors ``q_{t'}`` drawn uniformly, with replacement, from the *other masked frames of
the same utterance* (:func:`sample_negatives`, transformers' ``_sample_negative_indices`` /
fairseq's ``sample_negatives`` with ``negatives_from_everywhere=False``)::

    logits[t] = [cos(c_t, q_t), cos(c_t, q_{t'_1}), ..., cos(c_t, q_{t'_K})] / temperature
    loss      = Σ_masked t  CE(logits[t], 0)

A distractor equal to the target in every component (a collapsed codebook) gets ``-inf``, as
in fairseq and transformers. Cosines are float32 whatever the autocast dtype.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from speechssl.nn.losses import PredictionLoss

__all__ = ["sample_negatives", "contrastive_loss"]


def sample_negatives(mask: torch.Tensor, num_negatives: int, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
    """Distractor indices for every masked frame, from the same row's other masked frames.

    Args:
        mask: ``(B, T)`` bool, the masked frames.
        num_negatives: ``K``.
        generator: CPU generator (None: torch's global one).

    Returns:
        ``(B, T, K)`` int64 indices into the flattened ``(B · T)`` frames (as transformers'
        ``sampled_negative_indices``); rows of unmasked frames are 0. A row with a single masked
        frame gets that frame itself as every distractor (masked out later as equal to the target).
    """
    if mask.dim() != 2 or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a (B, T) bool tensor, got {mask.dtype} {tuple(mask.shape)}")
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    B, T = mask.shape
    cpu_mask = mask.cpu()
    out = torch.zeros(B, T, num_negatives, dtype=torch.long)
    for b in range(B):
        frames = cpu_mask[b].nonzero().flatten()  # (n,) masked frame positions
        n = len(frames)
        if n == 0:
            continue
        if n == 1:
            picks = torch.zeros(1, num_negatives, dtype=torch.long)
        else:
            picks = torch.randint(0, n - 1, (n, num_negatives), generator=generator)  # (n, K) of n - 1 others
            picks = picks + (picks >= torch.arange(n)[:, None]).long()  # skip the frame itself
        out[b, frames] = frames[picks] + b * T
    return out.to(mask.device)


def contrastive_loss(predicted: torch.Tensor, targets: torch.Tensor, negative_indices: torch.Tensor,
                     mask: torch.Tensor, temperature: float = 0.1) -> PredictionLoss:
    """Cosine-similarity InfoNCE of masked frames against in-utterance distractors (module docstring).

    Args:
        predicted: ``(B, T, E)`` context vectors ``c``.
        targets: ``(B, T, E)`` quantized targets ``q`` (distractors are read from them).
        negative_indices: ``(B, T, K)`` int64 indices into the flattened ``(B · T)`` targets
            (:func:`sample_negatives`); only masked frames' rows are read.
        mask: ``(B, T)`` bool, the frames that are scored.
        temperature: the cosines are divided by it (wav2vec 2.0 / w2v-BERT: 0.1).

    Returns:
        :class:`~speechssl.nn.losses.PredictionLoss`: the cross-entropy summed over the ``count``
        masked frames (float32), and how many of them rank their target first.
    """
    B, T, E = predicted.shape
    if tuple(targets.shape) != (B, T, E) or tuple(mask.shape) != (B, T) or negative_indices.shape[:2] != (B, T):
        raise ValueError(f"shapes disagree: predicted {tuple(predicted.shape)}, targets {tuple(targets.shape)}, "
                         f"negative_indices {tuple(negative_indices.shape)}, mask {tuple(mask.shape)}")
    with torch.autocast(device_type=predicted.device.type, enabled=False):
        c = predicted[mask].float()  # (N, E)
        q = targets.float()
        pos = q[mask]  # (N, E)
        negs = q.reshape(B * T, E)[negative_indices[mask]]  # (N, K, E)
        candidates = torch.cat([pos.unsqueeze(1), negs], dim=1)  # (N, 1 + K, E)
        logits = F.cosine_similarity(c.unsqueeze(1), candidates, dim=-1) / temperature  # (N, 1 + K)
        neg_is_pos = (negs == pos.unsqueeze(1)).all(-1)  # (N, K)
        logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(neg_is_pos, float("-inf"))], dim=1)
        zeros = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
        loss = F.cross_entropy(logits, zeros, reduction="sum")
    with torch.no_grad():
        correct = (logits.argmax(-1) == 0).sum() if len(logits) else torch.zeros((), dtype=torch.long)
    return PredictionLoss(loss=loss, count=int(len(logits)), correct=correct.to(torch.long))
