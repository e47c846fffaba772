"""Self-supervised objectives as pure functions of embeddings, targets and masks.

Every loss is *summed* over its units (frames, patches, queries) and returned with the unit
count, the Trainer's convention (:mod:`speechssl.train.task`: ``Task.loss`` returns the sum and
``sample_size``; the Trainer divides once, after adding over accumulation steps and ranks).
Losses are computed in float32, whatever the autocast dtype of the inputs.

* :func:`cosine_logits` + :func:`masked_prediction_loss` — HuBERT's masked prediction: cosine
  similarity of projected frames with class embeddings over a temperature, cross-entropy over
  the classes.
* :func:`info_nce` — InfoNCE with an explicit ``(N, M)`` positive mask (and optional candidate
  mask), optionally over keys all-gathered from every rank (:func:`gather_with_grad`);
  :func:`nt_xent` — SimCLR's symmetric 2N variant on top of it (optional pseudo-labels: G-SimCLR).
* :func:`masked_mse` — regression on selected frames (data2vec, SSAST's generative head).
* :func:`layer_distillation` — DistilHuBERT's per-layer ``L1 − log σ(cos)`` with length masks.
* :func:`cosine_triplet_loss` — the ranking (triplet) loss of Wang and Gupta (2015) and
  Transitive Invariance: ``max(0, D(a, p) − D(a, n) + M)``, ``D = 1 − cos``.
"""
from __future__ import annotations

import contextlib
from typing import Callable, NamedTuple, Sequence, Union

import torch
from torch import distributed as dist
from torch.nn import functional as F

from speechssl.nn.lengths import padding_mask

__all__ = ["PredictionLoss", "LossSum", "DistillationLoss", "cosine_logits", "masked_prediction_loss",
           "gather_with_grad", "gather_rows", "info_nce", "nt_xent", "masked_mse", "layer_distillation",
           "TripletLoss", "cosine_triplet_loss"]

Gather = Union[bool, Callable[[torch.Tensor], torch.Tensor]]


class LossSum(NamedTuple):
    """A loss summed over ``count`` units."""

    loss: torch.Tensor  # scalar float32
    count: int


class PredictionLoss(NamedTuple):
    """A classification-style loss summed over ``count`` units, with the units predicted right."""

    loss: torch.Tensor  # scalar float32, summed
    count: int  # units scored
    correct: torch.Tensor  # scalar int64, detached: units whose top logit is (a) right one


class DistillationLoss(NamedTuple):
    """:func:`layer_distillation`'s result: sums over layers and valid frames."""

    loss: torch.Tensor  # scalar float32: Σ_layers Σ_frames (l1_weight · L1 + cos_weight · (−log σ(cos)))
    count: int  # valid frames (per layer)
    l1: torch.Tensor  # (L,) detached: Σ_frames mean_D |pred − target| of each layer
    cos: torch.Tensor  # (L,) detached: Σ_frames −log σ(cos(pred, target)) of each layer


# --- masked prediction (HuBERT) ----------------------------------------------------------------

def cosine_logits(x: torch.Tensor, embs: torch.Tensor, temperature: float, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity of each frame with each class embedding, over a temperature (HuBERT logits).

    Always float32 (autocast disabled): ``cos / 0.1`` spans ±10, too coarse for bf16.

    Args:
        x: ``(N, E)`` projected frames.
        embs: ``(K, E)`` class embeddings.
        temperature: HuBERT's ``logit_temp`` (0.1).
        eps: ``F.normalize`` epsilon.

    Returns:
        ``(N, K)`` float32 ``normalize(x) @ normalize(embs).T / temperature``.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = F.normalize(x.float(), dim=-1, eps=eps)
        embs = F.normalize(embs.float(), dim=-1, eps=eps)
        return x @ embs.t() / temperature  # (N, K)


def masked_prediction_loss(logits: torch.Tensor, targets: torch.Tensor) -> PredictionLoss:
    """Cross-entropy of the selected frames' logits against their class ids, summed.

    Args:
        logits: ``(N, K)`` e.g. from :func:`cosine_logits` on the masked frames.
        targets: ``(N,)`` int64 class ids in ``[0, K)``.

    Returns:
        :class:`PredictionLoss`: ``Σ_n CE(logits_n, targets_n)``, ``N``, and the frames whose argmax
        is the target.
    """
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (N, K) and targets (N,), got {tuple(logits.shape)} and "
                         f"{tuple(targets.shape)}")
    loss = F.cross_entropy(logits, targets, reduction="sum")
    with torch.no_grad():
        correct = (logits.argmax(-1) == targets).sum()
    return PredictionLoss(loss, int(targets.numel()), correct)


# --- contrastive ------------------------------------------------------------------------------

def _row_counts(x: torch.Tensor, group) -> list[int]:
    """Rows of ``x`` on every rank."""
    n = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    counts = [torch.empty_like(n) for _ in range(dist.get_world_size(group))]
    dist.all_gather(counts, n, group=group)
    return [int(c) for c in counts]


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 (row counts may differ per rank); the gradient of the local rows is
    the sum over ranks of the gradients flowing into them."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group, sizes: list[int]) -> torch.Tensor:  # type: ignore[override]
        padded = x.new_zeros(max(sizes), *x.shape[1:])
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded, group=group)
        ctx.group, ctx.rank, ctx.sizes = group, dist.get_rank(group), sizes
        return torch.cat([p[:s] for p, s in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        sizes = ctx.sizes
        padded = grad.new_zeros(len(sizes), max(sizes), *grad.shape[1:])
        for r, g in enumerate(grad.split(sizes)):
            padded[r, : sizes[r]] = g
        dist.all_reduce(padded, op=dist.ReduceOp.SUM, group=ctx.group)
        return padded[ctx.rank, : sizes[ctx.rank]], None, None


def gather_rows(x: torch.Tensor, group=None) -> tuple[torch.Tensor, int]:
    """:func:`gather_with_grad` and where this rank's rows start in the result.

    Returns:
        ``(Σ_r n_r, *)`` every rank's rows in rank order, and the index of this rank's first row
        (``(x, 0)`` without an initialised process group).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return x, 0
    sizes = _row_counts(x, group)
    return _AllGatherWithGrad.apply(x, group, sizes), sum(sizes[: dist.get_rank(group)])


def gather_with_grad(x: torch.Tensor, group=None) -> torch.Tensor:
    """Differentiable all-gather along dim 0; the identity without an initialised process group.

    Every rank must call it (and later run backward) in the same order. Ranks may pass different
    numbers of rows. Backward all-reduces the gradient of the gathered tensor and returns this
    rank's rows, so ``Σ_ranks loss_r`` gets the gradient a single process would compute over the
    union of the rows.

    Args:
        x: ``(n_r, *)`` this rank's rows.
        group: process group (None: the default group).

    Returns:
        ``(Σ_r n_r, *)`` every rank's rows, in rank order.
    """
    return gather_rows(x, group)[0]


def _place(mask: torch.Tensor, total: int, start: int, fill: bool) -> torch.Tensor:
    """A local ``(N, m)`` mask as columns ``start:start+m`` of an ``(N, total)`` mask, ``fill`` elsewhere."""
    out = torch.full((mask.shape[0], total), fill, dtype=torch.bool, device=mask.device)
    out[:, start:start + mask.shape[1]] = mask
    return out


def info_nce(queries: torch.Tensor, keys: torch.Tensor, positive_mask: torch.Tensor, temperature: float = 1.0, *,
             candidate_mask: torch.Tensor | None = None, normalize: bool = False, multi_positive: str = "mean",
             gather: Gather = False) -> PredictionLoss:
    """InfoNCE of each query against the keys, positives given by a mask; summed over queries.

    With ``s_nm = q_n · k_m / temperature`` (cosine when ``normalize``) and ``C_n`` the candidate
    keys of query ``n`` (its positives always included), the loss of query ``n`` with positives
    ``P_n`` is

    * ``multi_positive="mean"`` (SupCon's L_out, solo-learn's SimCLR):
      ``−1/|P_n| Σ_{p∈P_n} log(exp s_np / Σ_{m∈C_n} exp s_nm)``;
    * ``"logsumexp"`` (L_in): ``−log(Σ_{p∈P_n} exp s_np / Σ_{m∈C_n} exp s_nm)``.

    Both equal the cross-entropy of row ``n`` against its positive when there is one; then the
    value is computed with ``F.cross_entropy`` exactly. Queries without a positive are left out.

    Args:
        queries: ``(N, D)``.
        keys: ``(M, D)`` (this rank's keys when gathering).
        positive_mask: ``(N, M)`` bool over this rank's keys — or ``(N, M_all)`` over the gathered
            keys of every rank; local masks mark other ranks' keys as non-positive candidates.
        temperature: divides the similarities (1.0: raw dot products, as SSAST).
        candidate_mask: ``(N, M)`` / ``(N, M_all)`` bool, keys in the denominator (None: all;
            NT-Xent excludes a query's own key). Local masks make other ranks' keys candidates.
        normalize: L2-normalise queries and keys first (cosine similarity, computed in float32 even
            under autocast); without it the dot products run in the autocast dtype.
        multi_positive: ``"mean"`` or ``"logsumexp"`` (see above).
        gather: False; True to all-gather the keys from every rank (:func:`gather_with_grad`; the
            queries stay local); or a callable ``keys (M, D) -> (M_all, D)`` (then both masks must
            cover ``M_all`` keys).

    Returns:
        :class:`PredictionLoss`: summed loss (float32), the number of queries with a positive, and
        the queries whose most similar candidate is a positive.
    """
    if queries.dim() != 2 or keys.dim() != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(f"expected queries (N, D) and keys (M, D), got {tuple(queries.shape)} and {tuple(keys.shape)}")
    if multi_positive not in ("mean", "logsumexp"):
        raise ValueError(f"multi_positive must be 'mean' or 'logsumexp', got {multi_positive!r}")
    N, M = queries.shape[0], keys.shape[0]
    for name, m in (("positive_mask", positive_mask), ("candidate_mask", candidate_mask)):
        if m is not None and (m.dtype != torch.bool or m.dim() != 2 or m.shape[0] != N):
            raise ValueError(f"{name} must be a bool tensor (N={N}, M), got {m.dtype} {tuple(m.shape)}")
    if normalize:
        queries = F.normalize(queries.float(), dim=-1)
        keys = F.normalize(keys.float(), dim=-1)
    if gather is True:
        keys, start = gather_rows(keys)
    elif callable(gather):
        keys, start = gather(keys), None
    else:
        start = 0
    total = keys.shape[0]

    def _fit(m: torch.Tensor, name: str, fill: bool) -> torch.Tensor:
        if m.shape[1] == total:
            return m
        if m.shape[1] == M and start is not None:
            return _place(m, total, start, fill)
        raise ValueError(f"{name} has {m.shape[1]} columns; expected {total} (every gathered key)"
                         + (f" or {M} (this rank's keys)" if start is not None else ""))

    positive_mask = _fit(positive_mask, "positive_mask", False)
    # cosine logits / τ in float32 (bf16 is too coarse at τ = 0.1); raw dot products follow autocast
    with torch.autocast(device_type=queries.device.type, enabled=False) if normalize else contextlib.nullcontext():
        logits = (queries @ keys.T / temperature).float()  # (N, M_all)
    if candidate_mask is not None:
        candidate_mask = _fit(candidate_mask, "candidate_mask", True)
        logits = logits.masked_fill(~(candidate_mask | positive_mask), float("-inf"))
    n_pos = positive_mask.sum(1)
    has = n_pos > 0
    if not bool(has.all()):
        logits, positive_mask, n_pos = logits[has], positive_mask[has], n_pos[has]
    if bool((n_pos <= 1).all()):
        target = positive_mask.to(torch.uint8).argmax(1)
        loss = F.cross_entropy(logits, target, reduction="sum")
    elif multi_positive == "mean":
        log_prob = logits - logits.logsumexp(1, keepdim=True)
        loss = -(torch.where(positive_mask, log_prob, 0.0).sum(1) / n_pos).sum()
    else:
        pos_logits = logits.masked_fill(~positive_mask, float("-inf"))
        loss = (logits.logsumexp(1) - pos_logits.logsumexp(1)).sum()
    with torch.no_grad():
        correct = positive_mask.gather(1, logits.argmax(1, keepdim=True)).sum()
    return PredictionLoss(loss, int(logits.shape[0]), correct)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, *, gather: Gather = False,
            labels: torch.Tensor | None = None) -> PredictionLoss:
    """SimCLR's NT-Xent: each of the 2B views must find its partner among the other 2B − 1.

    ``z = [z1; z2]`` is L2-normalised; query ``i`` has positive ``(i + B) mod 2B`` and every key
    but itself as candidates. Gathered, the keys are every rank's ``[z1_r; z2_r]`` and each rank
    scores its own 2B queries, so ``Σ_ranks`` equals the single-process loss over all items.

    With ``labels`` (G-SimCLR's pseudo-labels), the views of the other items that share an
    item's label are no negatives of it: they leave its denominator (the partner, which shares
    it, stays as the positive). A label ``< 0`` marks an item without a label, whose
    candidates are all the other views as without ``labels``. Gathered, the labels are
    gathered with the keys, so same-label items of other ranks leave the denominator too.

    Args:
        z1, z2: ``(B, D)`` projections of two views of the same ``B`` items.
        temperature: τ (SimCLR: 0.1–0.5).
        gather: see :func:`info_nce`.
        labels: ``(B,)`` int64 pseudo-label of each item, or None (every other view is a negative).

    Returns:
        :class:`PredictionLoss` summed over the ``2B`` queries.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"expected two (B, D) views of equal shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    B = z1.shape[0]
    z = torch.cat([z1, z2])  # (2B, D)
    idx = torch.arange(2 * B, device=z.device)
    positive = torch.zeros(2 * B, 2 * B, dtype=torch.bool, device=z.device)
    positive[idx, (idx + B) % (2 * B)] = True
    candidate = ~torch.eye(2 * B, dtype=torch.bool, device=z.device)
    if callable(gather):
        raise ValueError("nt_xent gathers with gather=True only (its masks are built per rank)")
    if labels is not None:
        if labels.shape != (B,) or labels.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"labels must be an integer tensor (B={B},), got {labels.dtype} {tuple(labels.shape)}")
        candidate = _label_candidates(labels.to(device=z.device, dtype=torch.long), gather is True)
    return info_nce(z, z, positive, temperature, candidate_mask=candidate, normalize=True, gather=gather)


def _label_candidates(labels: torch.Tensor, gather: bool) -> torch.Tensor:
    """``(2B, M)`` candidates of :func:`nt_xent`'s queries with ``labels (B,)``: every key but the query
    itself and the views of items with the query's label (``M`` = every rank's ``2B_r`` when gathering)."""
    lab = torch.cat([labels, labels])  # (2B,), the label of each view
    keys, start = gather_rows(lab) if gather else (lab, 0)  # (M,)
    n = lab.shape[0]
    same = (lab[:, None] == keys[None, :]) & (lab[:, None] >= 0)  # (2B, M)
    own = torch.zeros_like(same)
    own[torch.arange(n, device=lab.device), start + torch.arange(n, device=lab.device)] = True
    return ~(same | own)


# --- regression and distillation ------------------------------------------------------------

def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, *,
               reduce_dim: str = "mean", scale: float = 1.0, beta: float = 0.0) -> LossSum:
    """Squared error on the selected units, reduced over the feature dim, summed over units.

    data2vec: ``reduce_dim="sum"``, ``scale=1/sqrt(D)`` on the masked frames; SSAST/SSAMBA's
    generative head: ``reduce_dim="mean"`` on the masked patches.

    Args:
        pred, target: ``(*, D)`` e.g. ``(B, T, D)``; ``target`` is not detached here.
        mask: ``(*)`` bool, True on the units to score, e.g. ``(B, T)`` masked frames (None: all).
        reduce_dim: ``"mean"`` or ``"sum"`` over ``D``.
        scale: multiplies each unit's error.
        beta: > 0 uses smooth L1 with this ``beta`` instead (data2vec's ``loss_beta``).

    Returns:
        :class:`LossSum`: ``Σ_units scale · reduce_D(err)`` in float32 and the number of units.
    """
    if pred.shape != target.shape or pred.dim() < 1:
        raise ValueError(f"pred and target must have the same shape (*, D), got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    if reduce_dim not in ("mean", "sum"):
        raise ValueError(f"reduce_dim must be 'mean' or 'sum', got {reduce_dim!r}")
    if mask is not None:
        if mask.dtype != torch.bool or mask.shape != pred.shape[:-1]:
            raise ValueError(f"mask must be a bool tensor of shape {tuple(pred.shape[:-1])}, got {mask.dtype} "
                             f"{tuple(mask.shape)}")
        pred, target = pred[mask], target[mask]  # (U, D)
    if beta > 0:
        err = F.smooth_l1_loss(pred.float(), target.float(), reduction="none", beta=beta)
    else:
        err = (pred.float() - target.float()) ** 2
    per_unit = err.mean(-1) if reduce_dim == "mean" else err.sum(-1)
    if scale != 1.0:
        per_unit = per_unit * scale
    return LossSum(per_unit.sum(), int(per_unit.numel()))


def layer_distillation(preds: Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
                       lengths: torch.Tensor | None = None, *, l1_weight: float = 1.0,
                       cos_weight: float = 1.0) -> DistillationLoss:
    """DistilHuBERT's layer-to-layer distillation: ``L1 − λ log σ(cos)`` per frame, per layer.

    For each layer ``l`` and valid frame ``t``: ``mean_D |p_lt − y_lt|`` and
    ``−log σ(cos(p_lt, y_lt))``; both summed over frames and layers. Dividing by ``count`` gives
    DistilHuBERT's loss (frame mean, layer sum).

    Args:
        preds: ``L`` student predictions ``(B, T, D)`` (or one ``(L, B, T, D)`` tensor).
        targets: ``L`` teacher hidden states ``(B, T, D)`` (detach them yourself).
        lengths: ``(B,)`` valid frames (None: all ``T``).
        l1_weight, cos_weight: weights of the two terms (DistilHuBERT: 1 and λ = 1).

    Returns:
        :class:`DistillationLoss`.
    """
    if len(preds) != len(targets) or len(preds) == 0:
        raise ValueError(f"expected as many predictions as targets (at least one), got {len(preds)} and {len(targets)}")
    B, T = preds[0].shape[:2]
    valid = None if lengths is None else ~padding_mask(lengths.to(preds[0].device), T)  # (B, T)
    total = preds[0].new_zeros((), dtype=torch.float32)
    l1s, coss = [], []
    for i, (p, y) in enumerate(zip(preds, targets)):
        if p.shape != y.shape or p.dim() != 3 or p.shape[:2] != (B, T):
            raise ValueError(f"layer {i}: prediction {tuple(p.shape)} and target {tuple(y.shape)} must both be "
                             f"(B={B}, T={T}, D)")
        p, y = p.float(), y.float()
        if valid is not None:
            p, y = p[valid], y[valid]  # (U, D)
        l1 = (p - y).abs().mean(-1).sum()
        cos = -F.logsigmoid(F.cosine_similarity(p, y, dim=-1)).sum()
        total = total + l1_weight * l1 + cos_weight * cos
        l1s.append(l1.detach())
        coss.append(cos.detach())
    count = B * T if valid is None else int(valid.sum())
    return DistillationLoss(total, count, torch.stack(l1s), torch.stack(coss))


# --- ranking ----------------------------------------------------------------------------------

class TripletLoss(NamedTuple):
    """:func:`cosine_triplet_loss`'s result: sums over the ``count`` anchors scored."""

    loss: torch.Tensor  # scalar float32: Σ_anchors mean over its negatives of the hinge
    count: int  # anchors with at least one valid negative
    violations: torch.Tensor  # scalar float32, detached: Σ_anchors fraction of its triplets with a positive hinge
    d_pos: torch.Tensor  # scalar float32, detached: Σ_anchors D(a, p)
    d_neg: torch.Tensor  # scalar float32, detached: Σ_anchors mean over its negatives of D(a, n)


def cosine_triplet_loss(anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                        margin: float = 0.5, *, negative_mask: torch.Tensor | None = None) -> TripletLoss:
    """The ranking loss on cosine distance, one positive and ``M`` negatives per anchor.

    ``D(x, y) = 1 − x·y / (|x| |y|)``; for anchor ``a`` with positive ``p`` and negatives
    ``n_1 .. n_M``, the loss is the mean over its valid negatives of
    ``max(0, D(a, p) − D(a, n_m) + margin)`` (Wang and Gupta, 2015; Transitive
    Invariance, Wang, He and Gupta, 2017, trains with the same loss), summed over anchors.
    Anchors whose negatives are all masked out contribute nothing and are not counted.

    Args:
        anchors: ``(B, D)``.
        positives: ``(B, D)``.
        negatives: ``(B, M, D)``.
        margin: ``M`` of the hinge (Wang and Gupta, 2015: 0.5).
        negative_mask: ``(B, M)`` bool, False for a negative slot to ignore (None: all valid).

    Returns:
        :class:`TripletLoss`.
    """
    if anchors.dim() != 2 or positives.shape != anchors.shape:
        raise ValueError(f"anchors and positives must both be (B, D), got {tuple(anchors.shape)} and "
                         f"{tuple(positives.shape)}")
    B, D = anchors.shape
    if negatives.dim() != 3 or negatives.shape[0] != B or negatives.shape[2] != D:
        raise ValueError(f"negatives must be (B={B}, M, D={D}), got {tuple(negatives.shape)}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    valid = (torch.ones(negatives.shape[:2], dtype=torch.bool, device=anchors.device) if negative_mask is None
             else negative_mask.to(device=anchors.device, dtype=torch.bool))
    if valid.shape != negatives.shape[:2]:
        raise ValueError(f"negative_mask must be (B={B}, M={negatives.shape[1]}), got {tuple(valid.shape)}")
    a = F.normalize(anchors.float(), dim=-1)
    d_pos = 1.0 - (a * F.normalize(positives.float(), dim=-1)).sum(-1)  # (B,)
    d_neg = 1.0 - torch.einsum("bd,bmd->bm", a, F.normalize(negatives.float(), dim=-1))  # (B, M)
    hinge = torch.relu(d_pos[:, None] - d_neg + margin)  # (B, M)
    n = valid.sum(1)  # (B,)
    scored = n > 0
    per_anchor = torch.where(valid, hinge, 0.0).sum(1) / n.clamp(min=1)  # (B,)
    loss = per_anchor[scored].sum()
    with torch.no_grad():
        frac = (torch.where(valid, hinge > 0, False).sum(1).float() / n.clamp(min=1))[scored].sum()
        neg = (torch.where(valid, d_neg, 0.0).sum(1) / n.clamp(min=1))[scored].sum()
    return TripletLoss(loss, int(scored.sum()), frac, d_pos.detach()[scored].sum(), neg)
