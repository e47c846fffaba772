"""SlotCon (Wen, Zhao and Qi, NeurIPS 2022, "Self-Supervised Visual Representation Learning with Semantic Grouping").

* :class:`SlotConModel` — the upstream: the backbone (image upstream contract, its
  :meth:`~SlotConModel.forward`) plus the grouping head that SlotCon learns with it: the
  per-pixel projector and the prototypes. :meth:`~SlotConModel.project` gives the projected
  dense map ``z (B, D', h, w)`` (the backbone's last hidden state on its patch grid, class token
  dropped), :meth:`~SlotConModel.group` the prototype scores and slots
  (:mod:`speechssl.nn.semantic_grouping`), :meth:`~SlotConModel.slot_masks` every patch's
  prototype ``(B, h, w)``.
* :func:`dino_head` — SlotCon's ``DINOHead`` / ``DINOHead2d`` as an
  :class:`~speechssl.nn.mlp.MLPHead`: ``Linear → BN → GELU`` repeated
  ``layers - 1`` times, then ``Linear``; weights truncated-normal (std 0.02), biases 0. Over a
  map it runs on every pixel (a 1x1 conv), its BatchNorm over all pixels of the batch (BN2d).
* :class:`SlotConPretrainModel` — the student (``upstream``), the EMA teacher (``teacher``, a
  second :class:`SlotConModel`, updated by the task's ``on_update``), the slot ``predictor``
  and the teacher ``center`` ``(K,)``. ``forward(views, crops)`` runs both networks on both
  views (each view its own batch, as SlotCon), aligns the score maps on the views' overlap
  (:mod:`speechssl.nn.view_align`) and predicts the slots the contrastive loss uses; the task
  turns the result into the losses.

The teacher normalises with its batch's statistics while the model trains (SlotCon's teacher
runs its BatchNorms in training mode); its running statistics are left untouched there and
follow the student's (:func:`speechssl.nn.ema.ema_update_`).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from speechssl.nn.image_backbone import ImageUpstream, build_image_backbone
from speechssl.nn.mlp import MLPHead
from speechssl.nn.semantic_grouping import active_slots, argmax_masks, prototype_scores, slot_pool
from speechssl.nn.view_align import align_to_overlap, overlap_boxes
from speechssl.upstream.slotcon.config import SlotConConfig

__all__ = ["SlotConModel", "dino_head", "SlotConPretrainModel", "batch_statistics"]


def dino_head(in_dim: int, hidden_dim: int, out_dim: int, layers: int) -> MLPHead:
    """SlotCon's ``DINOHead`` / ``DINOHead2d`` (see the module docstring): ``(N, D)`` → ``(N, P)``."""
    return MLPHead(in_dim, hidden_dim, out_dim, layers, batch_norm=True, activation="gelu", hidden_bias=True,
                   init="trunc_normal")


class SlotConModel(ImageUpstream):
    """The SlotCon encoder and grouping head as an image upstream (see the module docstring)."""

    method = "slotcon"

    def __init__(self, config: SlotConConfig) -> None:
        super().__init__()
        self.config = config
        config.validate()
        c = config
        self.backbone = build_image_backbone(c.backbone, c.image_size, c.channels, c.resnet, c.vit,
                                             cls_token=c.vit.cls_token)
        self.projector = dino_head(self.hidden_sizes[-1], c.projector_hidden_dim, c.projector_dim, c.projector_layers)
        self.prototypes = nn.Embedding(c.num_prototypes, c.projector_dim)  # N(0, 1), as SlotCon's slot_embed

    @classmethod
    def from_config(cls, config: SlotConConfig) -> "SlotConModel":
        return cls(config)

    @property
    def num_prototypes(self) -> int:
        return int(self.config.num_prototypes)

    def forward(self, images: torch.Tensor) -> dict[str, Any]:
        """``images (B, C, H, W)`` → ``{"hidden_states": [(B, T, D_l)], "last_hidden_state", "lengths" (B,),
        "patch_grid"}`` (the backbone's tokens: :mod:`speechssl.nn.vit` / :mod:`speechssl.nn.resnet`)."""
        return self.backbone(images)

    def dense(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's dense map: the last hidden state's patch tokens ``(B, D, h, w)``."""
        tokens = self.backbone(images)["last_hidden_state"][:, self.prefix_tokens:]  # (B, h * w, D)
        h, w = self.patch_grid
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)  # (B, D, h, w)

    def project(self, images: torch.Tensor) -> torch.Tensor:
        """The projected dense map ``z (B, D', h, w)``."""
        x = self.dense(images)  # (B, D, h, w)
        B, D, h, w = x.shape
        z = self.projector(x.permute(0, 2, 3, 1).reshape(B * h * w, D))  # (B h w, D')
        return z.reshape(B, h, w, -1).permute(0, 3, 1, 2)  # (B, D', h, w)

    def group(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z (B, D', h, w)`` → ``slots (B, K, D')`` and prototype scores ``(B, K, h, w)`` (cosines)."""
        scores = prototype_scores(z, self.prototypes.weight)
        return slot_pool(z, scores, self.config.slot_temperature), scores

    def slot_masks(self, images: torch.Tensor) -> torch.Tensor:
        """Every patch's prototype ``(B, h, w)`` int64 (argmax of the cosine to the prototypes)."""
        return argmax_masks(prototype_scores(self.project(images), self.prototypes.weight))


@contextlib.contextmanager
def batch_statistics(module: nn.Module) -> Iterator[None]:
    """Inside: the BatchNorms of ``module`` normalise with the batch's statistics; their running
    statistics (and counters) are restored on exit, and so are their modes."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, {k: b.clone() for k, b in m.named_buffers(recurse=False)}) for m in norms]
    try:
        for m in norms:
            m.train()
        yield
    finally:
        with torch.no_grad():
            for m, (mode, bufs) in zip(norms, saved):
                m.train(mode)
                for k, b in m.named_buffers(recurse=False):
                    b.copy_(bufs[k])


class SlotConPretrainModel(nn.Module):
    """Student :class:`SlotConModel` (``upstream``), its EMA ``teacher``, the slot ``predictor`` and ``center``."""

    def __init__(self, config: SlotConConfig) -> None:
        super().__init__()
        self.upstream = SlotConModel(config)
        self.teacher = SlotConModel(config)
        self.teacher.load_state_dict(self.upstream.state_dict())
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        c = config
        self.predictor = dino_head(c.projector_dim, c.predictor_hidden_dim, c.projector_dim, c.predictor_layers)
        self.register_buffer("center", torch.zeros(c.num_prototypes))

    def forward(self, views: Sequence[torch.Tensor], crops: torch.Tensor) -> dict[str, Any]:
        """Both networks on both views.

        Args:
            views: 2 views ``(B, C, H, W)`` of the same ``B`` images.
            crops: ``(B, 2, R)`` their crop records (``top, left, height, width, flipped, ...``).

        Returns:
            ``{"student_scores", "teacher_scores": [2 x (B, K, h, w)], "aligned_student",
            "aligned_teacher": [2 x (B, K, h, w)] on the overlap, "valid": (B,) overlap not empty,
            "teacher_slots": [2 x (B, K, D')], "teacher_active": [2 x (B, K)], "queries": [2 x
            (B, K)] bool, "predictions": [2 x (N_d, D')]}``. Direction ``d`` predicts, from the
            student slots of view ``d`` present in both the student's view ``d`` and the
            teacher's view ``1 - d`` (``queries[d]``, row-major over ``(b, k)``), the teacher slots
            of view ``1 - d``.
        """
        if len(views) != 2:
            raise ValueError(f"SlotCon takes 2 views per image, got {len(views)}")
        B = views[0].shape[0]
        if crops.shape[:2] != (B, 2):
            raise ValueError(f"crops must be (B={B}, 2, R) records, got {tuple(crops.shape)}")
        s_slots, s_scores = zip(*(self.upstream.group(self.upstream.project(v)) for v in views))
        with torch.no_grad():
            ctx = batch_statistics(self.teacher) if self.training else contextlib.nullcontext()
            with ctx:
                t_slots, t_scores = zip(*(self.teacher.group(self.teacher.project(v)) for v in views))
        boxes, valid = overlap_boxes(crops)
        flipped = crops[:, :, 4] > 0.5  # (B, 2)
        aligned_s = [align_to_overlap(s_scores[v], boxes[v], flipped[:, v]) for v in range(2)]
        aligned_t = [align_to_overlap(t_scores[v], boxes[v], flipped[:, v]) for v in range(2)]
        s_active = [active_slots(s) for s in s_scores]
        t_active = [active_slots(t) for t in t_scores]
        queries = [s_active[d] & t_active[1 - d] for d in range(2)]  # (B, K) each
        selected = [s_slots[d][queries[d]] for d in range(2)]  # (N_d, D')
        sizes = [int(x.shape[0]) for x in selected]
        # one predictor batch for both directions: its BatchNorm needs more than one row in training
        if sum(sizes) > (1 if self.training else 0):
            predicted = self.predictor(torch.cat(selected)).split(sizes)
        else:  # no slot (or a single one in training) in both views: no contrastive term this batch
            queries = [torch.zeros_like(q) for q in queries]
            predicted = tuple(x[:0] for x in selected)
        return {"student_scores": list(s_scores), "teacher_scores": list(t_scores),
                "aligned_student": aligned_s, "aligned_teacher": aligned_t, "valid": valid.to(crops.device),
                "teacher_slots": list(t_slots), "teacher_active": t_active, "queries": queries,
                "predictions": list(predicted)}
