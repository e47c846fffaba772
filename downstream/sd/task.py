"""Speaker diarization on two-speaker mixtures (see the package docstring)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from speechssl.data.manifest import read_dict, read_labels, validate_manifest
from speechssl.downstream import metrics
from speechssl.downstream.heads import FrameHead
from speechssl.downstream.sd.mixtures import MixtureConfig, build_mixtures, rasterize, read_rttm
from speechssl.downstream.task import DownstreamTaskBase, SplitData, read_subset_labels, subset_split

__all__ = ["SDConfig", "SDHeadConfig", "Diarization", "pit_bce"]


@dataclass
class SDHeadConfig:
    """Frame head of the diarization model (s3prl: one LSTM layer + linear + sigmoid)."""

    kind: Literal["lstm", "linear"] = "lstm"
    hidden_dim: int = 128  # LSTM units per direction (s3prl: 512; sized for CPU runs)
    num_layers: int = 1
    dropout: float = 0.1


@dataclass
class SDConfig:
    """Two-speaker diarization."""

    subset: str = "read"  # source of single-speaker utterances (with .spk labels)
    mixtures: MixtureConfig = field(default_factory=MixtureConfig)
    rttm_dir: str = ""  # real data: a directory with <split>.tsv + <split>.rttm (skips the simulation)
    num_speakers: int = 2
    threshold: float = 0.5  # speaker active when its probability exceeds this
    median_filter: int = 1  # frames of median smoothing of the decisions (1: none; s3prl uses 11)
    collar_frames: int = 0  # frames left unscored around reference speaker changes
    head: SDHeadConfig = field(default_factory=SDHeadConfig)


def pit_bce(logits: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Permutation-invariant binary cross-entropy.

    Args:
        logits: ``(B, T, S)`` speaker-activity logits.
        labels: ``(B, T, S)`` 0/1 reference activity (padding anything).
        lengths: ``(B,)`` valid frames.

    Returns:
        ``(loss, perms)``: the BCE summed over valid frames and speakers with, per utterance,
        the speaker permutation of the labels that minimises it; ``perms (B, S)``.
    """
    b, t, s = logits.shape
    valid = (torch.arange(t, device=logits.device)[None] < lengths[:, None]).unsqueeze(-1).to(logits.dtype)
    perms = list(itertools.permutations(range(s)))
    losses = torch.stack([(F.binary_cross_entropy_with_logits(logits, labels[..., list(p)], reduction="none")
                           * valid).sum((1, 2)) for p in perms], dim=1)                        # (B, P)
    best, idx = losses.min(1)
    return best.sum(), torch.tensor(perms, device=logits.device)[idx]


def _alignment_phones(path: Path, rows: int) -> list[str]:
    """The ``.phn_ali`` rows at ``path`` with every frame's phone id replaced by its symbol
    (from ``dict.phn.txt`` beside it), as :func:`voice_activity` reads them."""
    dict_path = path.parent / "dict.phn.txt"
    if not dict_path.is_file():
        raise FileNotFoundError(f"{path} holds phone ids, but {dict_path} (their symbols, one per line) is missing")
    symbols = read_dict(dict_path).symbols
    out = []
    for lineno, row in enumerate(read_labels(path, expected_rows=rows), start=1):
        try:
            out.append(" ".join(symbols[int(i)] for i in row.split()))
        except (ValueError, IndexError):
            raise ValueError(f"{path}:{lineno}: expected phone ids 0..{len(symbols) - 1} "
                             f"(lines of {dict_path}), got {row[:60]!r}") from None
    return out


class Diarization(DownstreamTaskBase):
    """Frame-level activity of two speakers, PIT-trained, scored by DER."""

    name = "sd"
    scored_unit = "mixtures"
    trainer_defaults: ClassVar[dict[str, Any]] = {
        "max_updates": 500, "max_tokens": 5_000, "optim": {"lr": 2e-3, "weight_decay": 0.0},
        "schedule": {"name": "constant"}, "validate_every_updates": 100, "save_every_updates": 100,
        "validate_every_epochs": 0, "save_every_epochs": 0, "keep_last": 1, "best_metric": "der",
        "maximize_best_metric": False,
    }

    def _mixture_dir(self, split: str) -> Path:
        if self.cfg.rttm_dir:
            return Path(self.cfg.rttm_dir)
        source = subset_split(self.ctx.data_dir, self.cfg.subset, split)
        speakers = [s.strip() for s in read_subset_labels(source, "spk")]
        ali_path = source.source.with_suffix(".phn_ali")
        ali = _alignment_phones(ali_path, len(source)) if ali_path.is_file() else None
        num = self.cfg.mixtures.num_train if split == self.ctx.train_split else self.cfg.mixtures.num_eval
        work = self.ctx.work_dir or (self.ctx.data_dir / ".derived")
        return build_mixtures(source, speakers, split, work / "sd_mixtures", self.cfg.mixtures,
                              num=num, phn_ali=ali)

    def load_split(self, split: str) -> SplitData:
        directory = self._mixture_dir(split)
        manifest = validate_manifest(directory / f"{split}.tsv")  # user mixtures (rttm_dir) too: before any work
        rttm = read_rttm(directory / f"{split}.rttm")
        targets = []
        for rec in manifest.ids():
            rec_id = Path(rec).name
            if rec_id not in rttm:
                raise ValueError(f"{directory / f'{split}.rttm'} has no SPEAKER line for recording {rec_id!r} of "
                                 f"{directory / f'{split}.tsv'}: every recording needs its reference turns")
            segs = rttm[rec_id]
            spk = sorted({s.speaker for s in segs}, key=lambda x: min(s.start for s in segs if s.speaker == x))
            if len(spk) > self.cfg.num_speakers:
                raise ValueError(f"{directory / f'{split}.rttm'}: {rec_id} has {len(spk)} speakers, "
                                 f"more than task.num_speakers={self.cfg.num_speakers}")
            targets.append((segs, spk + [f"<none{i}>" for i in range(self.cfg.num_speakers - len(spk))]))
        return SplitData(manifest, targets)

    @property
    def frame_shift(self) -> float:
        return self.ctx.upstream.downsample_rate / 16000

    def build_head(self, in_dim: int) -> nn.Module:
        h = self.cfg.head
        return FrameHead(in_dim, self.cfg.num_speakers, kind=h.kind, hidden_dim=h.hidden_dim,
                         num_layers=h.num_layers, dropout=h.dropout)

    def collate_targets(self, targets: list[Any]) -> dict[str, Any]:
        return {"segments": targets}

    def _labels(self, batch: dict[str, Any], lengths: torch.Tensor, device: torch.device) -> torch.Tensor:
        t = int(lengths.max())
        rows = [rasterize(segs, spk, t, self.frame_shift) for segs, spk in batch["segments"]]
        return torch.from_numpy(np.stack(rows)).to(device)                          # (B, T, S)

    def compute_loss(self, out: dict[str, Any], batch: dict[str, Any]
                     ) -> tuple[torch.Tensor, float, dict[str, float]]:
        logits, lengths = out["logits"].float(), out["lengths"]
        labels = self._labels(batch, lengths, logits.device)
        loss, _ = pit_bce(logits, labels, lengths)
        frames = int(lengths.sum())
        logs: dict[str, float] = {}
        if not torch.is_grad_enabled():
            stats = self._der_stats(self._decide(logits, lengths), labels, lengths)
            logs = {"der_errors": float(stats["miss"] + stats["false_alarm"] + stats["confusion"]),
                    "der_speech": float(stats["speech"])}
        return loss, frames, logs

    def reduce_logs(self, sums: dict[str, float], sample_size: float) -> dict[str, float]:
        out = {k: v / max(sample_size, 1e-12) for k, v in sums.items() if not k.startswith("der_")}
        if "der_errors" in sums:
            out["der"] = sums["der_errors"] / max(sums["der_speech"], 1e-12)
        return out

    def _decide(self, logits: torch.Tensor, lengths: torch.Tensor) -> list[np.ndarray]:
        probs = torch.sigmoid(logits).cpu().numpy()
        out = []
        for p, n in zip(probs, lengths.tolist()):
            d = p[:n] > self.cfg.threshold
            if self.cfg.median_filter > 1:
                from scipy.ndimage import median_filter
                d = median_filter(d.astype(np.uint8), size=(self.cfg.median_filter, 1), mode="nearest") > 0
            out.append(d)
        return out

    def _der_stats(self, decisions: list[np.ndarray], labels: torch.Tensor, lengths: torch.Tensor
                   ) -> metrics.DERStats:
        total = None
        for d, ref, n in zip(decisions, labels.cpu().numpy(), lengths.tolist()):
            st = metrics.der(ref[:n], d, collar=self.cfg.collar_frames)
            total = st if total is None else total + st
        return total

    def decode(self, out: dict[str, Any], batch: dict[str, Any]) -> list[np.ndarray]:
        return self._decide(out["logits"].float(), out["lengths"])

    def score(self, split: str, predictions: list[np.ndarray]) -> dict[str, float]:
        total = None
        for d, (segs, spk) in zip(predictions, self.split(split).targets):
            ref = rasterize(segs, spk, len(d), self.frame_shift)
            st = metrics.der(ref, d, collar=self.cfg.collar_frames)
            total = st if total is None else total + st
        return {"der": total.der, "miss": total["miss"] / total["speech"],
                "false_alarm": total["false_alarm"] / total["speech"],
                "confusion": total["confusion"] / total["speech"]}

    def format_prediction(self, split: str, index: int, prediction: np.ndarray) -> str:
        data = self.split(split)
        active = prediction.sum(0).tolist()
        return f"{data.manifest.ids()[index]}\tframes active per output {active}\tspeakers {data.targets[index][1]}"
