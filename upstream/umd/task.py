"""UMD pretraining as a :class:`speechssl.train.Task`: masked diffusion auto-encoding.

Data: a directory with ``<split>.tsv`` image manifests (:mod:`speechssl.data.files` format,
e.g. ``scenes/`` of ``speechssl corpus images``); no labels needed. Training items get a light
augmentation (random resized crop with scale ``crop_scale``, horizontal flip), evaluation items
the whole image resized. Each item also carries its corruption, drawn in this order from one
generator of ``(noise seed, epoch, index)`` (:func:`speechssl.data.base.item_generator`):
masking ``noise (N,)`` ~ U[0, 1), ``clean`` = (U[0, 1) < ``clean_prob``), the step ``t`` ~
U{0 .. T-1} and ``eps (C, S, S)`` ~ N(0, 1); so corruptions never use global RNG and resume
exactly. (UMD puts a fixed fraction ``no_noise_prob`` of every batch in the clean step; here
each item is clean with that probability, the same fraction in expectation, independent of
batching and of the number of ranks.)

**Loss** (:func:`umd_loss`), per row, with ``se = mean over the p·p·C pixels of (pred - target)²``
per patch and means over the row's masked (``M``) or visible (``V``) patches:

* clean row: ``L = mean_M se(x̂_0, x_0)`` (MAE's loss on un-normalised pixels in [-1, 1]);
* noisy row: ``L = masked_weight · mean_M se(pred, target) + visible_weight · mean_V se(pred, target)``,
  the target of each set chosen by ``masked_target`` / ``visible_target`` (``x0``: ``x̂_0`` vs the
  clean patch; ``eps``: ``ε̂`` vs the noise).

The returned loss is ``Σ_rows L`` with ``sample_size`` = rows, so the reported loss is the mean
per row, i.e. UMD's ``r_{t=0}·L_{t=0} + (1 - r_{t=0})·L_{t≥1}``. Logs: ``mae`` (clean rows' ``L``),
``masked`` and ``visible`` (noisy rows' two unweighted terms), ``clean_frac``.

**Defaults and their sources** — UMD's released config (``philippe-eecs/small-vision``,
``big_vision/configs/ae_i1k.py``) and trainer (``trainers/train_ae.py``): ``no_noise_prob = 0.5``,
``mask_ratio_no_noise = 0.75``, ``mask_ratio = 0.375``, cosine betas over 1000 steps for pixel
diffusion (linear for latents), ``eps_loss`` on the visible patches + ``x0_loss`` on the masked
ones averaged (weights 0.5 / 0.5), inception crop with ``area_min = 80`` % and a flip; AdamW,
lr 1.5e-4 x batch/256, wd 0.05, betas (0.9, 0.95), gradient clip 1.0, 5 % warmup + cosine.

Run it with ``speechssl pretrain --method umd --preset tiny --data DIR/scenes --exp-dir EXP``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from speechssl.data.base import item_generator
from speechssl.data.image import ImageCollater, ImageDataset
from speechssl.nn.diffusion import SCHEDULES
from speechssl.train.task import PretrainContext, Task
from speechssl.upstream.umd.config import UMDConfig
from speechssl.upstream.umd.model import UMDOutput, UMDPretrainModel

__all__ = ["UMDTaskConfig", "UMDTask", "UMDImageDataset", "UMDLoss", "umd_loss"]

_NOISE_STREAM = 104729  # offset of the corruption seed from task.seed (crops and flips use task.seed itself)
_TARGETS = ("x0", "eps")


@dataclass
class UMDTaskConfig:
    """Data, augmentation, corruption and loss weights of UMD pretraining (defaults: UMD's, module docstring)."""

    data: str = ""  # directory with <split>.tsv image manifests (set by --data)
    schedule: Literal["cosine", "linear"] = "cosine"  # beta schedule (UMD: cosine for pixels, linear for latents)
    timesteps: int = 1000  # T, diffusion steps (UMD: 1000)
    clean_prob: float = 0.5  # probability of the clean t = 0 step per item (UMD no_noise_prob / r_{t=0}: 0.5)
    mask_ratio_clean: float = 0.75  # patches removed on clean rows (UMD mask_ratio_no_noise: 0.75)
    mask_ratio_noisy: float = 0.375  # patches removed on noisy rows (UMD mask_ratio: 0.375)
    masked_target: Literal["x0", "eps"] = "x0"  # what noisy rows' masked patches are scored on (UMD: x0)
    visible_target: Literal["x0", "eps"] = "eps"  # what noisy rows' visible patches are scored on (UMD: eps)
    masked_weight: float = 0.5  # weight of the masked term on noisy rows (UMD: (eps + x0) / 2)
    visible_weight: float = 0.5  # weight of the visible term on noisy rows
    crop_scale: tuple[float, float] = (0.8, 1.0)  # random resized crop area fractions (UMD: area_min 80 %)
    flip: float = 0.5  # probability of a horizontal flip (training)
    seed: int = 0  # seed of crops, flips and corruptions (per epoch and item)


class UMDImageDataset(ImageDataset):
    """:class:`~speechssl.data.image.ImageDataset` whose items also hold the corruption of the item:
    ``"noise": (N,)`` float32, ``"clean": bool``, ``"t": int``, ``"eps": (C, S, S)`` float32."""

    reserved = ImageDataset.reserved | {"noise", "clean", "t", "eps"}

    def __init__(self, manifest: str | Path, *, num_patches: int, noise_seed: int, clean_prob: float,
                 timesteps: int, **kwargs: Any) -> None:
        super().__init__(manifest, **kwargs)
        self.num_patches, self.noise_seed = num_patches, noise_seed
        self.clean_prob, self.timesteps = clean_prob, timesteps

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = super().__getitem__(index)
        gen = item_generator(self.noise_seed, self.epoch, index)
        item["noise"] = torch.rand(self.num_patches, generator=gen)
        item["clean"] = bool(torch.rand((), generator=gen) < self.clean_prob)
        item["t"] = int(torch.randint(0, self.timesteps, (), generator=gen))
        item["eps"] = torch.randn(self.channels, self.size, self.size, generator=gen)
        return item


@dataclass
class UMDLoss:
    """``total``: ``Σ_rows L`` (float32 scalar, with gradients); the rest are floats for the logs:
    ``mae`` = Σ over clean rows of their ``L``, ``masked`` / ``visible`` = Σ over noisy rows of the
    unweighted masked / visible terms, ``clean`` / ``noisy`` = row counts."""

    total: torch.Tensor
    mae: float
    masked: float
    visible: float
    clean: int
    noisy: int


def _mean_over(se: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """``se (B, N)``, ``where (B, N)`` bool → ``(B,)``: ``se``'s mean over each row's chosen patches (0: none)."""
    count = where.sum(dim=1).clamp(min=1)
    return (se * where).sum(dim=1) / count


def umd_loss(out: UMDOutput, *, masked_target: str = "x0", visible_target: str = "eps",
             masked_weight: float = 0.5, visible_weight: float = 0.5) -> UMDLoss:
    """UMD's loss of one batch (formula: module docstring), rows summed."""
    for name, value in (("masked_target", masked_target), ("visible_target", visible_target)):
        if value not in _TARGETS:
            raise ValueError(f"{name} must be one of {_TARGETS}, got {value!r}")
    se_x0 = ((out.pred_x0.float() - out.x0.float()) ** 2).mean(dim=-1)  # (B, N)
    se_eps = ((out.pred_eps.float() - out.eps.float()) ** 2).mean(dim=-1)  # (B, N)
    se = {"x0": se_x0, "eps": se_eps}
    mask, clean = out.mask, out.clean
    mae = _mean_over(se_x0, mask)  # (B,)
    masked = _mean_over(se[masked_target], mask)
    visible = _mean_over(se[visible_target], ~mask)
    noisy_row = masked_weight * masked + visible_weight * visible
    per_row = torch.where(clean, mae, noisy_row)  # (B,)
    noisy = ~clean
    return UMDLoss(total=per_row.sum(), mae=float((mae * clean).sum().detach()),
                   masked=float((masked * noisy).sum().detach()), visible=float((visible * noisy).sum().detach()),
                   clean=int(clean.sum()), noisy=int(noisy.sum()))


class UMDTask(Task):
    """UMD pretraining: builds :class:`UMDPretrainModel`, the image datasets and :func:`umd_loss`.

    Args:
        cfg: data, augmentation, corruption and loss weights.
        ctx: the pretraining context; ``ctx.model`` is a :class:`UMDConfig`.
    """

    method = "umd"

    def __init__(self, cfg: UMDTaskConfig, ctx: PretrainContext) -> None:
        if not isinstance(ctx.model, UMDConfig):
            raise TypeError(f"{type(self).__name__} needs a UMDConfig in ctx.model, got {type(ctx.model).__name__}")
        if not cfg.data:
            raise ValueError("task.data is empty: pass --data DIR (the directory with <split>.tsv image manifests)")
        if cfg.schedule not in SCHEDULES:
            raise ValueError(f"task.schedule must be one of {SCHEDULES}, got {cfg.schedule!r}")
        if cfg.timesteps < 1 or (cfg.schedule == "linear" and cfg.timesteps < 21):
            raise ValueError(f"task.timesteps must be >= 1 (>= 21 for the linear schedule), got {cfg.timesteps}")
        if not 0.0 <= cfg.clean_prob <= 1.0:
            raise ValueError(f"task.clean_prob must be in [0, 1], got {cfg.clean_prob}")
        for name in ("mask_ratio_clean", "mask_ratio_noisy"):
            if not 0.0 <= getattr(cfg, name) < 1.0:
                raise ValueError(f"task.{name} must be in [0, 1), got {getattr(cfg, name)}")
        for name in ("masked_target", "visible_target"):
            if getattr(cfg, name) not in _TARGETS:
                raise ValueError(f"task.{name} must be one of {_TARGETS}, got {getattr(cfg, name)!r}")
        for name in ("masked_weight", "visible_weight"):
            if getattr(cfg, name) < 0:
                raise ValueError(f"task.{name} must be >= 0, got {getattr(cfg, name)}")
        if cfg.masked_weight == cfg.visible_weight == 0 and cfg.clean_prob < 1.0:
            raise ValueError("task.masked_weight and task.visible_weight are both 0: noisy rows would have no loss")
        ctx.model.validate()
        self.cfg, self.model_cfg = cfg, ctx.model
        self.num_layers = ctx.model.layers

    @classmethod
    def trainer_preset(cls, preset: str) -> Any:
        """tiny: short CPU run (AdamW 1.5e-3, 16 images a batch); small: longer, 32 a batch; both clip at 1.0 (UMD)."""
        from speechssl.train.presets import image_cosine, image_tiny

        if preset == "tiny":
            return image_tiny(batch=16, lr=1.5e-3, betas=(0.9, 0.95), weight_decay=0.05, clip_norm=1.0,
                              warmup_updates=20)
        return image_cosine(max_updates=3000, batch=32, lr=1.5e-3, betas=(0.9, 0.95), weight_decay=0.05, clip_norm=1.0,
                            warmup_updates=150, every=500, log_every_updates=50)

    def build_model(self) -> UMDPretrainModel:
        c = self.cfg
        return UMDPretrainModel(self.model_cfg, schedule=c.schedule, timesteps=c.timesteps,
                                mask_ratio_clean=c.mask_ratio_clean, mask_ratio_noisy=c.mask_ratio_noisy)

    def dataset(self, split: str) -> UMDImageDataset:
        manifest = Path(self.cfg.data) / f"{split}.tsv"
        if not manifest.is_file():
            raise FileNotFoundError(f"manifest not found: {manifest} (split {split!r} of task.data)")
        m, c = self.model_cfg, self.cfg
        grid = (m.image_size // m.patch) ** 2
        return UMDImageDataset(manifest, num_patches=grid, noise_seed=c.seed + _NOISE_STREAM,
                               clean_prob=c.clean_prob, timesteps=c.timesteps, size=m.image_size,
                               augment=split == "train", scale=c.crop_scale, flip=c.flip, crop_fraction=1.0,
                               channels=m.channels, seed=c.seed)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = ImageCollater()(items)
        batch["noise"] = torch.stack([it["noise"] for it in items])  # (B, N)
        batch["clean"] = torch.tensor([it["clean"] for it in items], dtype=torch.bool)  # (B,)
        batch["t"] = torch.tensor([it["t"] for it in items], dtype=torch.long)  # (B,)
        batch["eps"] = torch.stack([it["eps"] for it in items])  # (B, C, S, S)
        return batch

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, float]]:
        out = model(batch["image"], batch["noise"], batch["t"], batch["eps"], batch["clean"])
        c = self.cfg
        res = umd_loss(out, masked_target=c.masked_target, visible_target=c.visible_target,
                       masked_weight=c.masked_weight, visible_weight=c.visible_weight)
        rows = res.clean + res.noisy
        return res.total, float(rows), {"mae": res.mae, "masked": res.masked, "visible": res.visible,
                                        "clean_rows": float(res.clean), "noisy_rows": float(res.noisy)}

    def reduce_logs(self, sums: dict[str, float], sample_size: float) -> dict[str, float]:
        """``mae`` per clean row, ``masked`` / ``visible`` per noisy row, ``clean_frac`` of the rows."""
        clean, noisy = sums.get("clean_rows", 0.0), sums.get("noisy_rows", 0.0)
        return {"mae": sums.get("mae", 0.0) / max(clean, 1.0), "masked": sums.get("masked", 0.0) / max(noisy, 1.0),
                "visible": sums.get("visible", 0.0) / max(noisy, 1.0),
                "clean_frac": clean / max(sample_size, 1e-12)}

    def upstream(self, model: nn.Module) -> nn.Module:
        return model.upstream

    def upstream_config(self) -> UMDConfig:
        return self.model_cfg

    def no_weight_decay(self, model: nn.Module) -> set[str]:
        """Class and mask tokens (as MAE and UMD's ``no_decay_list``, with every bias and norm weight)."""
        return {name for name, _ in model.named_parameters() if name.endswith(("cls_token", "mask_token"))}

    def layer_id(self, name: str) -> int | None:
        """0 for the patch embedding, class token and the encoder's timestep embedding, ``i + 1`` for encoder
        layer ``i``, ``L + 1`` for the rest."""
        if ".vit.patch_embed." in f".{name}" or name.endswith("cls_token") or name.startswith("upstream.time_embed."):
            return 0
        marker = "vit.encoder.layers."
        if marker in name:
            return int(name.split(marker, 1)[1].split(".", 1)[0]) + 1
        return self.model_cfg.layers + 1
