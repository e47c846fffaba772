"""SlotCon pretraining as a :class:`speechssl.train.Task`: semantic grouping + slot contrast, EMA teacher.

Data: a directory with ``<split>.tsv`` image manifests (e.g. ``scenes/`` of ``speechssl corpus
images``); no labels. Every item gives two views whose crops overlap
(:class:`speechssl.data.image_augment.OverlappingViewsDataset`: random resized crop, view 2's
drawn to share at least ``min_overlap`` of its area with view 1's, flip, colour jitter,
greyscale, optional blur; seeded by ``(seed, epoch, index)``), with their crop records.

Objective (``models/slotcon.py`` of github.com/CVMI-Lab/SlotCon), per batch of ``B`` images:

* **grouping** — on the views' overlap, aligned in both (:mod:`speechssl.nn.view_align`), the
  student's prototype assignment of each point in one view predicts the centred, sharpened
  teacher assignment of the same point in the other:
  ``L_g = CE(t_2 → q_1) + CE(t_1 → q_2)`` (:func:`speechssl.nn.semantic_grouping.grouping_loss`,
  ``τ_s = 0.1``, ``τ_t = 0.07``), each a mean over the aligned pixels of the items whose views
  overlap. The teacher centre then follows the mean teacher score over all pixels of both views
  (EMA momentum 0.9; all ranks' pixels under DDP).
* **slot contrast** — the student slots of view 1 that are the argmax of some pixel in view 1
  (student) and in view 2 (teacher) go through the predictor and must pick, by InfoNCE at
  ``τ = 0.2`` (:func:`speechssl.nn.losses.info_nce`, cosine), the teacher slot of the same
  image and prototype in view 2 among all teacher slots of view 2 that some pixel picks (every
  rank's: the task is batch-coupled); SlotCon scales it by ``2τ``. ``L_c = L_c(1 → 2) + L_c(2 → 1)``.
* ``L = w L_g + (1 - w) L_c`` with ``w = 0.5``; returned as ``B · L`` over ``sample_size = B``.

The teacher (encoder, projector and prototypes) follows the student as an EMA after every
update (``on_update``), with momentum ``1 - (1 - 0.99)(cos(π n / N) + 1) / 2`` at update ``n``
of ``N = momentum_updates`` (:mod:`speechssl.nn.ema`); the student's predictor has no teacher.

Run it with ``speechssl pretrain --method slotcon --preset tiny --data DIR/scenes --exp-dir EXP``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from speechssl.data.augment import pixel_statistics
from speechssl.data.image import ImageCollater
from speechssl.data.image_augment import OverlappingViewsDataset, ViewAugment
from speechssl.nn.ema import cosine_momentum, ema_update_
from speechssl.nn.losses import info_nce
from speechssl.nn.semantic_grouping import grouping_loss
from speechssl.train.task import PretrainContext, Task
from speechssl.upstream.slotcon.config import SlotConConfig
from speechssl.upstream.slotcon.model import SlotConPretrainModel

__all__ = ["SlotConTaskConfig", "SlotConTask", "slot_contrast"]

_log = logging.getLogger(__name__)


@dataclass
class SlotConTaskConfig:
    """Data, augmentation, objective and teacher schedule of SlotCon pretraining."""

    data: str = ""  # directory with <split>.tsv image manifests (set by --data)
    student_temperature: float = 0.1  # τ_s of the student's assignment (SlotCon: 0.1)
    teacher_temperature: float = 0.07  # τ_t of the teacher's assignment (SlotCon: 0.07)
    center_momentum: float = 0.9  # EMA momentum of the teacher centre (SlotCon: 0.9)
    contrast_temperature: float = 0.2  # τ of the slot InfoNCE (SlotCon: 0.2)
    group_loss_weight: float = 0.5  # w: L = w L_grouping + (1 - w) L_contrast (SlotCon: 0.5)
    teacher_momentum: float = 0.99  # m_0, the teacher EMA momentum at update 0 (SlotCon: 0.99), rising to 1
    momentum_updates: int = 300  # N of the cosine momentum ramp: set it to trainer.max_updates (tiny: 300)
    crop_scale: tuple[float, float] = (0.08, 1.0)  # random resized crop area fractions (SlotCon: min-scale 0.08)
    min_overlap: float = 0.01  # view 2's crop shares >= this fraction of its area with view 1's (SlotCon: 0.01)
    flip: float = 0.5  # horizontal flip probability of each view
    jitter_strength: float = 0.5  # colour jitter (0.8s, 0.8s, 0.8s, 0.2s): 0.5 → SlotCon's 0.4, 0.4, (0.2), 0.1
    jitter_prob: float = 0.8  # probability of colour jitter (SlotCon: 0.8)
    grey_prob: float = 0.2  # probability of greyscale (SlotCon: 0.2)
    blur_prob: tuple[float, float] = (0.0, 0.0)  # Gaussian blur probability per view (SlotCon at 224 px: 1.0, 0.1)
    normalize: Literal["none", "imagenet"] = "none"  # pixel normalisation of the views
    seed: int = 0  # seed of the augmentations (per epoch and item)


def slot_contrast(predictions: torch.Tensor, queries: torch.Tensor, teacher_slots: torch.Tensor,
                  teacher_active: torch.Tensor, temperature: float, gather: Any = None) -> tuple[torch.Tensor, int, int]:
    """SlotCon's ``ctr_loss_filtered`` of one direction: mean InfoNCE of the predicted slots, times ``2τ``.

    Args:
        predictions: ``(N, D')`` predicted student slots, the ``True`` entries of ``queries`` row-major.
        queries: ``(B, K)`` bool, which ``(image, prototype)`` each prediction is.
        teacher_slots: ``(B, K, D')`` the other view's teacher slots (the keys).
        teacher_active: ``(B, K)`` bool, the keys that take part (some pixel picks the prototype).
        temperature: ``τ``.
        gather: ``x (M, ...) -> (x_all, offset)`` over ranks (the task's ``gather``), or None.

    Returns:
        the loss (float32 scalar; 0 when ``N = 0``), ``N`` and how many predictions rank their
        own key first.
    """
    B, K, D = teacher_slots.shape
    keys = teacher_slots.reshape(B * K, D)
    active = teacher_active.reshape(B * K, 1).to(keys.dtype)
    offset = 0
    if gather is not None:
        keys, offset = gather(keys)
        active, _ = gather(active)
    n = int(predictions.shape[0])
    if n == 0:
        return predictions.sum() * 0.0, 0, 0
    own = queries.reshape(-1).nonzero().squeeze(1) + offset  # (N,) column of each query's key
    positive = torch.zeros(n, keys.shape[0], dtype=torch.bool, device=keys.device)
    positive[torch.arange(n, device=keys.device), own] = True
    candidates = (active.reshape(1, -1) > 0.5).expand(n, -1)
    res = info_nce(predictions, keys.detach(), positive, temperature, candidate_mask=candidates, normalize=True)
    return res.loss / max(res.count, 1) * (2.0 * temperature), int(res.count), int(res.correct)


class SlotConTask(Task):
    """SlotCon pretraining: :class:`SlotConPretrainModel`, overlapping two-view images, the two losses.

    Args:
        cfg: data, augmentation, objective and teacher schedule.
        ctx: the pretraining context; ``ctx.model`` is a :class:`SlotConConfig`.
    """

    method = "slotcon"
    batch_coupled = True

    def __init__(self, cfg: SlotConTaskConfig, ctx: PretrainContext) -> None:
        if not isinstance(ctx.model, SlotConConfig):
            raise TypeError(f"{type(self).__name__} needs a SlotConConfig in ctx.model, got {type(ctx.model).__name__}")
        if not cfg.data:
            raise ValueError("task.data is empty: pass --data DIR (the directory with <split>.tsv image manifests)")
        for name in ("student_temperature", "teacher_temperature", "contrast_temperature"):
            if not getattr(cfg, name) > 0:
                raise ValueError(f"task.{name} must be > 0, got {getattr(cfg, name)}")
        for name in ("center_momentum", "group_loss_weight", "teacher_momentum", "min_overlap"):
            if not 0.0 <= getattr(cfg, name) <= 1.0:
                raise ValueError(f"task.{name} must be in [0, 1], got {getattr(cfg, name)}")
        if cfg.momentum_updates < 1:
            raise ValueError(f"task.momentum_updates must be >= 1 (set it to trainer.max_updates), "
                             f"got {cfg.momentum_updates}")
        if len(cfg.blur_prob) != 2:
            raise ValueError(f"task.blur_prob needs one probability per view (2), got {list(cfg.blur_prob)}")
        pixel_statistics(cfg.normalize, ctx.model.channels)  # checked before any work
        ctx.model.validate()
        self.cfg, self.model_cfg = cfg, ctx.model
        self.view_augments = tuple(
            ViewAugment(size=ctx.model.image_size, scale=tuple(cfg.crop_scale), flip=cfg.flip,
                        jitter_strength=cfg.jitter_strength, jitter_prob=cfg.jitter_prob, grey_prob=cfg.grey_prob,
                        blur_prob=float(p)) for p in cfg.blur_prob)
        for v in self.view_augments:
            try:
                v.validate()
            except ValueError as exc:
                raise ValueError(f"task: {exc}") from None
        self._warned_schedule = False

    @classmethod
    def trainer_preset(cls, preset: str) -> Any:
        """tiny/tiny_resnet: Adam 1e-3, 32 images a batch, 300 updates (validated and saved every 100);
        small: Adam 1e-3, 256 images, 20k updates (set ``task.momentum_updates=20000``).

        SlotCon trains with LARS (lr 1.0 per 256 images, weight decay 1e-5, 5 warm-up epochs,
        cosine) at batch 512; at these batch sizes Adam trains as well, with its weight decay.
        """
        from speechssl.train.presets import image_cosine, image_tiny

        if preset in ("tiny", "tiny_resnet"):
            return image_tiny(batch=32, lr=1e-3, weight_decay=1e-5, warmup_updates=10, save_every_epochs=0,
                              validate_every_epochs=0)
        return image_cosine(max_updates=20_000, batch=256, lr=1e-3, weight_decay=1e-5, warmup_updates=500, every=2000)

    def build_model(self) -> SlotConPretrainModel:
        return SlotConPretrainModel(self.model_cfg)

    def frozen_modules(self, model: nn.Module) -> dict[str, str | None]:
        """The EMA teacher: never optimised, checkpointed with the model (reference None)."""
        return {"teacher": None}

    def dataset(self, split: str) -> OverlappingViewsDataset:
        manifest = Path(self.cfg.data) / f"{split}.tsv"
        if not manifest.is_file():
            raise FileNotFoundError(f"manifest not found: {manifest} (split {split!r} of task.data)")
        mean, std = pixel_statistics(self.cfg.normalize, self.model_cfg.channels)
        return OverlappingViewsDataset(manifest, view_augments=self.view_augments, condition_overlap=True,
                                       min_overlap=self.cfg.min_overlap, augment=True, mean=mean, std=std,
                                       channels=self.model_cfg.channels, seed=self.cfg.seed)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return ImageCollater({})(items)

    def _grouping(self, out: dict[str, Any], center: torch.Tensor) -> torch.Tensor:
        """``L_g``: both directions, each a mean over the aligned pixels of the overlapping items."""
        total = out["aligned_student"][0].new_zeros((), dtype=torch.float32)
        valid = out["valid"]
        for d in range(2):
            q, t = out["aligned_student"][d], out["aligned_teacher"][1 - d]  # (B, K, h, w)
            B, K, h, w = q.shape
            keep = valid.view(B, 1).expand(B, h * w).reshape(-1)  # (B h w,)
            total = total + grouping_loss(q.permute(0, 2, 3, 1).reshape(-1, K), t.permute(0, 2, 3, 1).reshape(-1, K),
                                          center, self.cfg.student_temperature, self.cfg.teacher_temperature, keep)
        return total

    @torch.no_grad()
    def _update_center(self, model: nn.Module, teacher_scores: list[torch.Tensor]) -> None:
        """``c ← m c + (1 - m) · mean teacher score`` over every pixel of both views (of every rank)."""
        s = torch.cat([x.detach().float() for x in teacher_scores])  # (2B, K, h, w)
        stats = torch.cat([s.sum(dim=(0, 2, 3)), s.new_tensor([s.shape[0] * s.shape[2] * s.shape[3]])])[None]
        stats = self.gather(stats)[0].sum(0)  # (K + 1,): pixel sums and the pixel count of all ranks
        m = self.cfg.center_momentum
        model.center.copy_(model.center * m + stats[:-1] / stats[-1] * (1.0 - m))

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, float]]:
        core = getattr(model, "module", model)  # the center buffer of a DDP-wrapped model
        out = model(batch["views"], batch["crops"])
        B = int(batch["views"][0].shape[0])
        center = core.center.detach().clone()
        l_group = self._grouping(out, center)
        l_contrast = l_group.new_zeros(())
        queries = correct = 0
        gather = self.gather if self.gathering else None
        for d in range(2):
            l, n, c = slot_contrast(out["predictions"][d], out["queries"][d], out["teacher_slots"][1 - d],
                                    out["teacher_active"][1 - d], self.cfg.contrast_temperature, gather)
            l_contrast = l_contrast + l
            queries += n
            correct += c
        if core.training:
            self._update_center(core, out["teacher_scores"])
        w = self.cfg.group_loss_weight
        loss = w * l_group + (1.0 - w) * l_contrast
        active = float(sum(t.sum() for t in out["teacher_active"])) / 2.0  # prototypes some pixel picks, per view
        logs = {"grouping": float(l_group.detach()) * B, "contrast": float(l_contrast.detach()) * B,
                "overlap": float(out["valid"].sum()), "slots": active, "queries": float(queries),
                "slot_correct": float(correct)}
        return loss * B, float(B), logs

    def reduce_logs(self, sums: dict[str, float], sample_size: float) -> dict[str, float]:
        """Per-image losses, overlap fraction and slots used in both views; slot retrieval accuracy per query."""
        n = max(sample_size, 1e-12)
        out = {k: sums.get(k, 0.0) / n for k in ("grouping", "contrast", "overlap", "slots")}
        out["slot_acc"] = sums.get("slot_correct", 0.0) / max(sums.get("queries", 0.0), 1.0)
        return out

    def on_update(self, model: nn.Module, num_updates: int) -> None:
        """EMA of the teacher with the cosine momentum of update ``num_updates``."""
        total = self.cfg.momentum_updates
        if num_updates > total and not self._warned_schedule:
            _log.warning("update %d is past task.momentum_updates=%d: the teacher momentum is 1 from here on "
                         "(the teacher no longer moves); set task.momentum_updates to trainer.max_updates",
                         num_updates, total)
            self._warned_schedule = True
        ema_update_(model.teacher, model.upstream, cosine_momentum(self.cfg.teacher_momentum, num_updates, total))

    def upstream(self, model: nn.Module) -> nn.Module:
        return model.upstream

    def upstream_config(self) -> SlotConConfig:
        return self.model_cfg

    def no_weight_decay(self, model: nn.Module) -> set[str]:
        """The ViT class token (with ``optim.decay_norm_bias=false``, which also exempts biases and norms)."""
        return {name for name, _ in model.named_parameters() if name.endswith("cls_token")}
