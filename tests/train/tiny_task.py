"""A tiny but real Task for the Trainer tests: masked-frame prediction over fbank frames.

The model sees 40-bin Kaldi fbank frames (25 ms / 10 ms, 16 kHz) of synthesized audio with
some frames replaced by a learned mask vector, and regresses the masked frames from their
neighbours (a 5-frame convolution). The loss is the squared error summed over masked frames;
``sample_size`` is the number of masked frames.

Also a script, so the DDP and SIGKILL tests can run it in fresh processes::

    python -m tests.train.tiny_task --data DIR --exp-dir EXP [key=value ...]
    torchrun --nproc_per_node 2 -m tests.train.tiny_task --data DIR --exp-dir EXP ...

Overrides address ``{task, trainer}`` like ``speechssl pretrain`` (``trainer.max_updates=8``).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch import nn

from speechssl.config import apply_overrides, to_dict
from speechssl.data.collate import AudioCollater
from speechssl.data.dataset import AudioDataset
from speechssl.data.manifest import write_manifest
from speechssl.features import fbank
from speechssl.nn.lengths import padding_mask
from speechssl.train.config import TrainerConfig
from speechssl.train.task import PretrainContext, Task

N_BANDS = 40


@dataclass
class TinyModelConfig:
    hidden: int = 32
    dropout: float = 0.0


PRESETS = {"tiny": lambda: TinyModelConfig(hidden=16), "small": lambda: TinyModelConfig(hidden=32)}


@dataclass
class TinyTaskConfig:
    data: str = ""
    max_sample_size: int = 8000
    mask_prob: float = 0.3
    global_rng_mask: bool = False  # masks from the global torch RNG (tests RNG restore) instead of item seeds
    nan_at_calls: tuple[int, ...] = ()  # make the loss NaN in these training loss calls (1-based, per rank)
    nan_always: bool = False
    nan_rank: int = -1  # with nan_at_calls: only this distributed rank sees the NaN (-1: every rank)
    step_delay_s: float = 0.0  # sleep in each loss call (gives a test time to kill the process)
    seed: int = 0


def fbank_frames(wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """40-bin Kaldi fbank (25 ms / 10 ms) in float32, outside any autocast: ``(B, S)`` → ``(B, T, 40)``."""
    with torch.autocast(device_type=wav.device.type, enabled=False):
        return fbank(wav.float(), num_mel_bins=N_BANDS, lengths=lengths)


class TinyMaskedPredictor(nn.Module):
    """Predict masked frames from their neighbours: ``(B, T, F)`` + mask ``(B, T)`` → ``(B, T, F)``."""

    def __init__(self, dim: int = N_BANDS, hidden: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        self.mask_emb = nn.Parameter(torch.zeros(dim))
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(dim, hidden, kernel_size=5, padding=2)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Conv1d(hidden, dim, kernel_size=1)

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.where(mask.unsqueeze(-1), self.mask_emb.to(feats.dtype), self.norm(feats))
        h = self.dropout(self.act(self.conv(x.transpose(1, 2))))  # (B, H, T)
        return self.out(h).transpose(1, 2)  # (B, T, F)


class TinyTask(Task):
    def __init__(self, cfg: TinyTaskConfig, ctx: PretrainContext | None = None) -> None:
        self.cfg = cfg
        self.model_cfg = ctx.model if ctx is not None else TinyModelConfig()
        self.updates = 0
        self.calls = 0  # training loss calls on this rank
        self._collater = AudioCollater(pad_audio=True)

    def build_model(self) -> nn.Module:
        return TinyMaskedPredictor(hidden=self.model_cfg.hidden, dropout=self.model_cfg.dropout)

    def dataset(self, split: str) -> AudioDataset:
        train = split == "train"
        return AudioDataset(Path(self.cfg.data) / f"{split}.tsv", max_sample_size=self.cfg.max_sample_size,
                            min_sample_size=400, crop="random" if train else "start", seed=self.cfg.seed)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return self._collater(items)

    def _mask(self, batch: dict[str, Any], valid: torch.Tensor) -> torch.Tensor:
        B, T = valid.shape
        if self.cfg.global_rng_mask:
            u = torch.rand(B, T, device=valid.device)
        else:
            u = torch.stack([torch.rand(T, generator=torch.Generator().manual_seed(int(s)))
                             for s in batch["seed"].tolist()]).to(valid.device)
        mask = (u < self.cfg.mask_prob) & valid
        mask[:, 0] |= ~mask.any(dim=1)  # at least one masked frame per utterance
        return mask

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, float]]:
        if self.cfg.step_delay_s:
            time.sleep(self.cfg.step_delay_s)
        feats, flen = fbank_frames(batch["wav"], batch["lengths"])
        valid = ~padding_mask(flen, feats.shape[1])
        mask = self._mask(batch, valid)
        pred = model(feats, mask)
        err = (pred.float() - feats.float()).pow(2).sum(-1)[mask]
        loss = err.sum()
        if getattr(model, "training", True):
            self.calls += 1
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        nan_here = self.calls in self.cfg.nan_at_calls and self.cfg.nan_rank in (-1, rank)
        if self.cfg.nan_always or nan_here:
            loss = loss * float("nan")
        return loss, float(mask.sum()), {"frames": float(valid.sum())}

    def reduce_logs(self, sums: dict[str, float], sample_size: float) -> dict[str, float]:
        return {"masked_ratio": sample_size / max(sums.get("frames", 1.0), 1.0)}

    def on_update(self, model: nn.Module, num_updates: int) -> None:
        self.updates = num_updates

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state.get("updates", 0))
        self.calls = int(state.get("calls", 0))


def make_corpus(root: str | Path, n_train: int = 24, n_valid: int = 6, seed: int = 0) -> Path:
    """Write synthetic 16 kHz utterances (0.25–0.75 s of gliding harmonic tones) + train/valid.tsv."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("valid", n_valid)):
        rows = []
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            size = int(rng.integers(4000, 12000))
            t = np.arange(size) / 16000
            f0 = rng.uniform(100, 300) * (1 + 0.5 * t)
            phase = 2 * np.pi * np.cumsum(f0) / 16000
            wav = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
            wav = 0.3 * wav + 0.01 * rng.standard_normal(size)
            rel = f"{split}/utt{i:03d}.wav"
            sf.write(root / rel, wav.astype(np.float32), 16000, subtype="FLOAT")
            rows.append((rel, size))
        write_manifest(root / f"{split}.tsv", root, rows)
    return root


@dataclass
class _Tree:
    model: TinyModelConfig = dataclasses.field(default_factory=TinyModelConfig)
    task: TinyTaskConfig = dataclasses.field(default_factory=TinyTaskConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)


def main(argv: list[str] | None = None) -> None:
    from speechssl.log import setup_logging
    from speechssl.train.trainer import Trainer

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--exp-dir", required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0") or 0)
    setup_logging(logging.INFO if rank == 0 else logging.WARNING)
    tree = apply_overrides(_Tree(task=TinyTaskConfig(data=args.data)), args.overrides)
    torch.set_num_threads(1)
    Trainer(TinyTask(tree.task, PretrainContext("tiny-mfp-test", tree.model)), tree.trainer, args.exp_dir, config_tree=to_dict(tree)).fit()


if __name__ == "__main__":
    main()
