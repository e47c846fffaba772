"""Speaker verification (see the package docstring)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from speechssl.data.manifest import read_labels
from speechssl.downstream import metrics
from speechssl.downstream.heads import AMSoftmax, XVector
from speechssl.downstream.task import (
    DownstreamTaskBase, SplitData, class_index, read_subset_labels, sorted_classes, subset_split,
)

__all__ = ["ASVConfig", "XVectorConfig", "SpeakerVerification"]


@dataclass
class XVectorConfig:
    """x-vector head and its AM-softmax training loss (s3prl VoxCeleb1: margin 0.4, scale 30)."""

    channels: int = 128  # TDNN width (Kaldi: 512)
    pool_dim: int = 256  # last TDNN layer before statistics pooling (Kaldi: 1500)
    embed_dim: int = 128  # speaker embedding size (Kaldi: 512)
    dropout: float = 0.0
    margin: float = 0.4
    scale: float = 30.0


@dataclass
class ASVConfig:
    """Speaker verification: train on some speakers, verify trials of others."""

    subset: str = "read"  # speakers the x-vector is trained on (<split>.spk); valid: their loss picks the checkpoint
    trial_subset: str = "verification"  # held-out speakers' utterances
    trial_split: str = "test"  # manifest of the trial utterances (its ids are the trial file's ids)
    trials: str = "trials.txt"  # "<1|0> <utt_id1> <utt_id2>" lines, in trial_subset
    train_crop_s: float = 3.0  # random training crops of at most this many seconds (Kaldi: 2-4 s); 0: none
    head: XVectorConfig = field(default_factory=XVectorConfig)


class _XVectorHead(nn.Module):
    def __init__(self, in_dim: int, num_speakers: int, cfg: XVectorConfig) -> None:
        super().__init__()
        self.xvector = XVector(in_dim, channels=cfg.channels, pool_dim=cfg.pool_dim, embed_dim=cfg.embed_dim,
                               dropout=cfg.dropout)
        self.classifier = AMSoftmax(cfg.embed_dim, num_speakers, margin=cfg.margin, scale=cfg.scale)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        emb = self.xvector(x, lengths)["embedding"]
        return {"embedding": emb, "logits": self.classifier(emb)}   # logits without the margin


class SpeakerVerification(DownstreamTaskBase):
    """x-vector on training speakers; cosine scoring of held-out trials; EER."""

    name = "asv"
    scored_unit = "trials"
    trainer_defaults: ClassVar[dict[str, Any]] = {
        "max_updates": 800, "max_tokens": 20_000, "optim": {"lr": 1e-3, "weight_decay": 0.0},
        "schedule": {"name": "constant"}, "validate_every_updates": 100, "save_every_updates": 100,
        "validate_every_epochs": 0, "save_every_epochs": 0, "keep_last": 1,
        # the AM-softmax loss on the training speakers' valid utterances, not their accuracy: the
        # accuracy saturates at 1.0 within a few hundred updates while the margins (what the
        # held-out trials are scored with) keep growing
        "best_metric": "loss", "maximize_best_metric": False,
    }

    @property
    def speakers(self) -> list[str]:
        if not hasattr(self, "_speakers"):
            train = subset_split(self.ctx.data_dir, self.cfg.subset, self.ctx.train_split)
            self._speakers = sorted_classes([s.strip() for s in read_subset_labels(train, "spk")])
        return self._speakers

    def load_split(self, split: str) -> SplitData:
        if split == self.cfg.trial_split:
            manifest = subset_split(self.ctx.data_dir, self.cfg.trial_subset, split)
            return SplitData(manifest, [-1] * len(manifest), extra={"trials": self._trials(manifest)})
        manifest = subset_split(self.ctx.data_dir, self.cfg.subset, split)
        labels = [s.strip() for s in read_subset_labels(manifest, "spk")]
        return SplitData(manifest, class_index(labels, self.speakers, source=manifest.source.with_suffix(".spk")))

    def _trials(self, manifest: Any) -> list[tuple[int, int, int]]:
        path = manifest.source.parent / self.cfg.trials
        index = {u: i for i, u in enumerate(manifest.ids())}
        out = []
        for lineno, line in enumerate(read_labels(path), start=1):
            parts = line.split()
            if len(parts) != 3 or parts[0] not in ("0", "1"):
                raise ValueError(f"{path}:{lineno}: expected '<1|0> <utt_id1> <utt_id2>', got {line!r}")
            missing = [u for u in parts[1:] if u not in index]
            if missing:
                raise ValueError(f"{path}:{lineno}: utterance {missing[0]!r} is not in {manifest.source}")
            out.append((int(parts[0]), index[parts[1]], index[parts[2]]))
        if not out:
            raise ValueError(f"{path}: no trials")
        return out

    def build_head(self, in_dim: int) -> nn.Module:
        return _XVectorHead(in_dim, len(self.speakers), self.cfg.head)

    def collate_targets(self, targets: list[int]) -> dict[str, Any]:
        return {"target": torch.tensor(targets, dtype=torch.long)}

    def compute_loss(self, out: dict[str, Any], batch: dict[str, Any]
                     ) -> tuple[torch.Tensor, float, dict[str, float]]:
        target, logits = batch["target"], out["logits"]
        h = self.cfg.head
        margin = h.margin * h.scale * F.one_hot(target, logits.shape[-1]).to(logits.dtype)
        loss = F.cross_entropy(logits - margin, target, reduction="sum")
        return loss, target.shape[0], {"accuracy": float((logits.argmax(-1) == target).sum())}

    def decode(self, out: dict[str, Any], batch: dict[str, Any]) -> list[Any]:
        if int(batch["target"][0]) < 0:   # trial utterances: keep the embeddings
            return list(F.normalize(out["embedding"].float(), dim=-1).cpu().numpy())
        return out["logits"].argmax(-1).tolist()

    def score(self, split: str, predictions: list[Any]) -> dict[str, float]:
        data = self.split(split)
        if split != self.cfg.trial_split:
            return {"accuracy": metrics.accuracy(predictions, data.targets)}
        emb = np.stack(predictions)
        trials = data.extra["trials"]
        scores = np.array([float(emb[a] @ emb[b]) for _, a, b in trials])
        labels = np.array([lab for lab, _, _ in trials])
        rate, threshold = metrics.eer(scores, labels)
        self._trial_scores = scores
        return {"eer": rate, "eer_threshold": threshold, "trials": float(len(trials))}

    def evaluate(self, model: Any, split: str, *, max_tokens: int,
                 device: str | torch.device = "cpu") -> tuple[dict[str, float], list[Any]]:
        predictions = self.predict(model, split, max_tokens=max_tokens, device=device)
        result = self.score(split, predictions)
        if split == self.cfg.trial_split:   # one line per trial: label, ids, cosine score
            ids = self.split(split).manifest.ids()
            predictions = [(lab, ids[a], ids[b], float(s))
                           for (lab, a, b), s in zip(self.split(split).extra["trials"], self._trial_scores)]
        return result, predictions

    def format_prediction(self, split: str, index: int, prediction: Any) -> str:
        if split == self.cfg.trial_split:
            lab, a, b, s = prediction
            return f"{lab}\t{a}\t{b}\t{s:.4f}"
        data = self.split(split)
        return f"{data.manifest.ids()[index]}\t{self.speakers[prediction]}\t{self.speakers[data.targets[index]]}"
