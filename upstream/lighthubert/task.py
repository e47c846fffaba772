"""LightHuBERT distillation (Wang et al., Interspeech 2022) as a :class:`speechssl.train.Task`.

A frozen HuBERT teacher (a model directory, ``task.teacher``) sees the clean waveform; the
student supernet sees it with masked frames and predicts, through a linear head, the mean of
the teacher's last ``target_layers`` hidden states (8 in the paper; all of a smaller
teacher's layers when it has fewer) on the masked frames; the loss is L1, averaged over the
teacher's dimensions and summed over masked frames (``sample_size`` = masked frames).

Two stages (``task.stage``):

1. the full student: every update runs the search space's largest subnet;
2. the supernet: every update runs a subnet drawn uniformly from the search space by a
   generator seeded from ``(trainer seed, task.seed)``; :meth:`on_update` draws the next one and
   :meth:`state_dict` keeps the generator and the current subnet, so a resumed run draws the
   same sequence. ``task.init`` starts the student from stage 1's output (a model directory or
   checkpoint the hub loads; the prediction head starts afresh).

The teacher is declared through :meth:`frozen_modules` with its path as reference: it is never
optimised and checkpoints store its path and hash, not its weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn
from torch.nn import functional as F

from speechssl import hub
from speechssl.data.collate import AudioCollater
from speechssl.data.dataset import AudioDataset, audio_split
from speechssl.nn.losses import layer_distillation
from speechssl.nn.supernet import Subnet
from speechssl.train.presets import cpu_tiny, fairseq_pretraining
from speechssl.train.task import PretrainContext, Task
from speechssl.upstream.lighthubert.config import LightHubertConfig
from speechssl.upstream.lighthubert.model import LightHubertModel

__all__ = ["LightHubertTaskConfig", "LightHubertDistillModel", "LightHubertTask"]


@dataclass
class LightHubertTaskConfig:
    """Data, teacher and stage settings of LightHuBERT distillation."""

    data: str = ""  # directory with <split>.tsv manifests (set by --data)
    teacher: str = ""  # the HuBERT teacher: a model directory (or anything speechssl.hub.load reads)
    stage: int = 1  # 1: distil the full student (largest subnet); 2: train the supernet (a subnet per update)
    init: Optional[str] = None  # stage 2: start the student from this model (stage 1's output); None: fresh
    target_layers: int = 8  # the target is the mean of the teacher's last this-many layers (fewer if it has fewer)
    sample_rate: int = 16000  # audio sample rate (Hz)
    max_sample_size: Optional[int] = 250000  # crop utterances to at most this many samples
    min_sample_size: int = 0  # drop utterances shorter than this
    random_crop: bool = True  # training crops start at random
    pad_audio: bool = False  # pad a batch to its longest item (False: crop to the shortest)
    seed: int = 1  # seed of the crops and (with the trainer seed) of the subnet sampler


class LightHubertDistillModel(nn.Module):
    """Student supernet + prediction head + frozen teacher.

    Args:
        student: the supernet upstream.
        teacher: a frozen upstream (the contract: ``teacher(wavs)``) with the student's frame rate.
        target_layers: how many of the teacher's last layers the target averages.
    """

    def __init__(self, student: LightHubertModel, teacher: nn.Module, target_layers: int) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher
        teacher_dim = int(teacher.hidden_sizes[-1])
        teacher_layers = len(teacher.hidden_sizes) - 1
        self.target_layers = max(1, min(target_layers, teacher_layers))
        # LightHuBERT's layer_pred_heads.{L-1}: the last hidden state (sliced to E) → the teacher's width
        self.pred_head = nn.Linear(student.config.encoder_embed_dim, teacher_dim, bias=False)

    @torch.no_grad()
    def targets(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean of the teacher's last layers ``(B, T, D_t)`` and its frame lengths ``(B,)``."""
        out = self.teacher([w[: int(n)] for w, n in zip(wav, lengths)])
        states = out["hidden_states"][-self.target_layers:]
        return torch.stack(states).mean(0), out["lengths"]

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor, subnet: Subnet) -> dict[str, torch.Tensor]:
        """``wav`` ``(B, S)``, ``lengths`` ``(B,)`` samples → masked-frame predictions and targets ``(U, D_t)``."""
        features, frame_lengths = self.student.forward_features(wav, lengths)
        out = self.student.encode(features, frame_lengths, subnet, mask=True)
        target, target_lengths = self.targets(wav, lengths)
        if target.shape[1] != features.shape[1] or not torch.equal(target_lengths.to(frame_lengths), frame_lengths):
            raise ValueError(f"teacher gives {target.shape[1]} frames, the student {features.shape[1]}: the teacher "
                             f"must share the student's downsample rate ({self.student.downsample_rate})")
        E = subnet.embed_dim
        pred = F.linear(out.hidden_states[-1], self.pred_head.weight[:, :E])  # (B, T, D_t)
        mask = out.mask_indices
        return {"pred": pred[mask], "target": target[mask].to(pred.dtype),
                "features_pen": features.float().pow(2).mean()}


class LightHubertTask(Task):
    """LightHuBERT's two-stage distillation (see the module docstring).

    Raises:
        TypeError: ``ctx.model`` is not a LightHubertConfig.
        ValueError / FileNotFoundError: missing data directory or teacher, a bad stage.
    """

    method = "lighthubert"

    def __init__(self, task_cfg: LightHubertTaskConfig, ctx: PretrainContext) -> None:
        if not isinstance(ctx.model, LightHubertConfig):
            raise TypeError(f"LightHubertTask needs a LightHubertConfig in ctx.model, got {type(ctx.model).__name__}")
        if not task_cfg.data:
            raise ValueError("task.data is empty: pass --data DIR (the directory with <split>.tsv)")
        if not task_cfg.teacher:
            raise ValueError("task.teacher is empty: give the HuBERT teacher's model directory")
        if task_cfg.stage not in (1, 2):
            raise ValueError(f"task.stage must be 1 (full student) or 2 (supernet), got {task_cfg.stage}")
        if task_cfg.target_layers < 1:
            raise ValueError(f"task.target_layers must be >= 1, got {task_cfg.target_layers}")
        ctx.model.validate()
        self.cfg = task_cfg
        self.model_cfg: LightHubertConfig = ctx.model
        self.space = ctx.model.search_space
        self._sampler = torch.Generator().manual_seed(int(ctx.seed) * 1_000_003 + int(task_cfg.seed))
        self.subnet: Subnet = self._next_subnet()
        self._collater = AudioCollater(pad_audio=task_cfg.pad_audio, crop="random" if task_cfg.random_crop else "start",
                                       max_sample_size=task_cfg.max_sample_size, sample_rate=task_cfg.sample_rate)

    @classmethod
    def trainer_preset(cls, preset: str) -> Any:
        """The short CPU run for tiny; fairseq's pretraining shape for small/base (lr 2e-4: our choice)."""
        if preset == "tiny":
            return cpu_tiny()
        if preset in ("small", "base"):
            return fairseq_pretraining(lr=2e-4, warmup_updates=25_000, max_tokens=1_400_000, max_updates=200_000)
        return None

    def _next_subnet(self) -> Subnet:
        return self.space.sample(self._sampler) if self.cfg.stage == 2 else self.space.max()

    def build_model(self) -> LightHubertDistillModel:
        student = LightHubertModel(self.model_cfg)
        if self.cfg.init:
            init = hub.load(self.cfg.init)
            if not isinstance(init, LightHubertModel):
                raise TypeError(f"task.init: {self.cfg.init} is a {type(init).__name__}, not a LightHuBERT model")
            student.load_state_dict(init.state_dict())
        teacher = hub.load(self.cfg.teacher)
        return LightHubertDistillModel(student, teacher, self.cfg.target_layers)

    def frozen_modules(self, model: nn.Module) -> dict[str, str | None]:
        return {"teacher": str(self.cfg.teacher)}

    def dataset(self, split: str) -> AudioDataset:
        c = self.cfg
        return audio_split(c.data, split, [], train=split == "train", max_sample_size=c.max_sample_size,
                           min_sample_size=c.min_sample_size, random_crop=c.random_crop, seed=c.seed,
                           sample_rate=c.sample_rate)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return self._collater(items)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, float]]:
        """Summed L1 over masked frames of the current subnet (the largest in validation)."""
        subnet = self.subnet if model.training else self.space.max()
        out = model(batch["wav"], batch["lengths"], subnet)
        pred, target = out["pred"], out["target"]
        dist = layer_distillation([pred[None]], [target[None]], cos_weight=0.0)
        count = int(dist.count)
        logs = {"l1": float(dist.loss.detach()), "subnet_embed_dim": float(subnet.embed_dim) * count,
                "subnet_layers": float(subnet.num_layers) * count}
        return dist.loss + 0.0 * out["features_pen"], float(count), logs

    def on_update(self, model: nn.Module, num_updates: int) -> None:
        """Stage 2: draw the subnet of the next update."""
        self.subnet = self._next_subnet()

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self._sampler.get_state(), "subnet": self.subnet.to_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._sampler.set_state(state["sampler"])
        self.subnet = Subnet.from_dict(state["subnet"])

    def upstream(self, model: nn.Module) -> nn.Module:
        return model.student

    def upstream_config(self) -> Any:
        return self.model_cfg
