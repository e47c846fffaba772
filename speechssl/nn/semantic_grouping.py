"""Semantic grouping with learnable prototypes (SlotCon; Wen, Zhao and Qi, NeurIPS 2022).

A dense projected feature map ``z (B, D, H, W)`` and ``K`` learnable prototypes ``S (K, D)``:

* :func:`prototype_scores` — the cosine of every pixel with every prototype,
  ``s_bkhw = <S_k / |S_k|, z_bhw / |z_bhw|>`` ``(B, K, H, W)`` (SlotCon's ``dots``).
* :func:`slot_pool` — the soft assignment ``A = softmax_k(s / τ) + ε`` (``τ``: SlotCon's teacher
  temperature 0.07, ``ε = 1e-6``) and the slots ``slot_bk = Σ_hw A_bkhw z_bhw / Σ_hw A_bkhw``
  ``(B, K, D)``: the attention-weighted mean of the unnormalised features per prototype.
* :func:`active_slots` — ``(B, K)`` bool: prototype ``k`` is the argmax of at least one pixel of
  the image (SlotCon's ``mask_q`` / ``mask_k`` of ``ctr_loss_filtered``).
* :func:`grouping_loss` — the cross-view assignment prediction on aligned pixels: with student
  scores ``q`` and teacher scores ``t`` of one pixel ``(K,)`` and the teacher centre ``c``,
  ``-Σ_k softmax_k((t - c) / τ_t) · log_softmax_k(q / τ_s)`` (SlotCon's ``self_distill``,
  ``τ_s = 0.1``, ``τ_t = 0.07``), averaged over the pixels kept.
* :func:`score_center` — the mean teacher score vector over pixels ``(K,)``, which the centre
  follows as an EMA, ``c ← m c + (1 - m) mean`` (``m = 0.9``; SlotCon's ``update_center``, from
  DINO).
* :func:`argmax_masks` — every pixel's prototype, ``argmax_k s`` ``(B, H, W)``: the slot masks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["prototype_scores", "slot_pool", "active_slots", "grouping_loss", "score_center", "argmax_masks"]


def _check_map(x: torch.Tensor, name: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{name} must be a map (B, C, H, W), got shape {tuple(x.shape)}")


def prototype_scores(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Cosine similarities ``(B, K, H, W)`` of ``features (B, D, H, W)`` and ``prototypes (K, D)``."""
    _check_map(features, "features")
    if prototypes.dim() != 2 or prototypes.shape[1] != features.shape[1]:
        raise ValueError(f"prototypes must be (K, D={features.shape[1]}), got {tuple(prototypes.shape)}")
    return torch.einsum("kd,bdhw->bkhw", F.normalize(prototypes, dim=1), F.normalize(features, dim=1))


def slot_pool(features: torch.Tensor, scores: torch.Tensor, temperature: float, eps: float = 1e-6) -> torch.Tensor:
    """Slots ``(B, K, D)``: the mean of ``features (B, D, H, W)`` weighted by ``softmax_k(scores / τ) + ε``.

    Args:
        features: the (unnormalised) projected map.
        scores: ``(B, K, H, W)`` from :func:`prototype_scores`.
        temperature: ``τ`` of the assignment softmax (over prototypes).
        eps: added to every assignment, so a prototype no pixel prefers still gets a defined slot
            (the mean of all pixels).
    """
    _check_map(features, "features")
    _check_map(scores, "scores")
    if scores.shape[0] != features.shape[0] or scores.shape[2:] != features.shape[2:]:
        raise ValueError(f"scores {tuple(scores.shape)} and features {tuple(features.shape)} differ in batch or grid")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    attn = (scores / temperature).softmax(dim=1) + eps  # (B, K, H, W)
    attn = attn / attn.sum(dim=(2, 3), keepdim=True)
    return torch.einsum("bdhw,bkhw->bkd", features, attn)


def active_slots(scores: torch.Tensor) -> torch.Tensor:
    """``(B, K)`` bool: prototype ``k`` is the argmax of at least one pixel of image ``b``."""
    _check_map(scores, "scores")
    B, K = scores.shape[:2]
    winners = scores.argmax(dim=1).reshape(B, -1)  # (B, H * W)
    present = torch.zeros(B, K, dtype=torch.bool, device=scores.device)
    return present.scatter_(1, winners, True)


def grouping_loss(student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor, student_temperature: float,
                  teacher_temperature: float, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the kept pixels of ``-Σ_k softmax((t - c) / τ_t)_k log_softmax(q / τ_s)_k`` (float32).

    Args:
        student: ``(N, K)`` student scores ``q`` of N (aligned) pixels.
        teacher: ``(N, K)`` teacher scores ``t`` of the same image points in the other view (no gradient).
        center: ``(K,)`` or ``(1, K)`` teacher centre ``c``.
        student_temperature, teacher_temperature: ``τ_s``, ``τ_t``.
        keep: ``(N,)`` bool, the pixels that count (None: all).

    Returns:
        scalar; 0 (with a gradient path) when no pixel is kept.
    """
    if student.dim() != 2 or student.shape != teacher.shape:
        raise ValueError(f"student and teacher scores must both be (N, K), got {tuple(student.shape)} and "
                         f"{tuple(teacher.shape)}")
    if not (student_temperature > 0 and teacher_temperature > 0):
        raise ValueError(f"temperatures must be > 0, got {student_temperature} and {teacher_temperature}")
    log_q = F.log_softmax(student.float() / student_temperature, dim=-1)
    p_t = F.softmax((teacher.float() - center.float().reshape(1, -1)) / teacher_temperature, dim=-1)
    ce = -(p_t.detach() * log_q).sum(-1)  # (N,)
    if keep is None:
        return ce.mean()
    if keep.shape != ce.shape:
        raise ValueError(f"keep must be ({ce.shape[0]},), got {tuple(keep.shape)}")
    w = keep.to(ce.dtype)
    return (ce * w).sum() / w.sum().clamp(min=1.0)


def score_center(teacher_scores: torch.Tensor) -> torch.Tensor:
    """``(K,)`` mean of ``(B, K, H, W)`` teacher scores over every pixel (the centre's batch target)."""
    _check_map(teacher_scores, "teacher_scores")
    return teacher_scores.detach().float().mean(dim=(0, 2, 3))


def argmax_masks(scores: torch.Tensor) -> torch.Tensor:
    """``(B, H, W)`` int64: each pixel's most similar prototype."""
    _check_map(scores, "scores")
    return scores.argmax(dim=1)
