"""Batch :class:`~speechssl.data.dataset.AudioDataset` items: pad, or crop to the shortest.

A batch is a dict::

    {"id": list[str], "index": (B,) int64, "seed": (B,) int64,
     "wav": (B, S) float32, "lengths": (B,) int64 samples, "padding_mask": (B, S) bool (True = padded),
     <frame or sequence label>: (B, T) int64 padded with label_pad, "<label>_lengths": (B,) int64,
     <utterance label>: (B,) int64}
"""
from __future__ import annotations

from typing import Any, Literal, Mapping

import numpy as np
import torch

from speechssl.data.labels import frame_crop, pad_ids
from speechssl.nn.lengths import pad_list, padding_mask

__all__ = ["AudioCollater"]


class AudioCollater:
    """Collate audio items with their frame, sequence and utterance labels.

    Args:
        label_kinds: label key → ``"frame"``, ``"sequence"`` or ``"utterance"``
            (``AudioDataset.label_kinds``; :meth:`AudioDataset.collater` fills all of this in).
        frame_label_rates: frame label key → label rate in Hz.
        pad_audio: True: zero-pad every waveform to the longest (fairseq ``pad_audio=True``).
            False: crop every waveform to the shortest (fairseq ``pad_audio=False``), frame
            labels cropped in step; the padding mask is then all False.
        label_pad: id written into label padding (-100 is ``cross_entropy``'s ignore index).
        crop: where a crop-to-shortest starts: ``"random"`` (drawn from the item's ``seed``),
            ``"center"`` or ``"start"``.
        max_sample_size: cap on the batch's length in samples (None: none).
        sample_rate: audio sample rate (Hz), for the frame-label arithmetic.
    """

    def __init__(self, label_kinds: Mapping[str, str] | None = None,
                 frame_label_rates: Mapping[str, float] | None = None, *, pad_audio: bool = True,
                 label_pad: int = -100, crop: Literal["random", "center", "start"] = "random",
                 max_sample_size: int | None = None, sample_rate: int = 16000) -> None:
        self.label_kinds = dict(label_kinds or {})
        self.frame_label_rates = dict(frame_label_rates or {})
        for key, kind in self.label_kinds.items():
            if kind == "frame" and key not in self.frame_label_rates:
                raise ValueError(f"frame label {key!r} needs a rate in frame_label_rates")
            if kind not in ("frame", "sequence", "utterance"):
                raise ValueError(f"label {key!r}: kind must be 'frame', 'sequence' or 'utterance', got {kind!r}")
        if crop not in ("random", "center", "start"):
            raise ValueError(f"crop must be 'random', 'center' or 'start', got {crop!r}")
        self.pad_audio = pad_audio
        self.label_pad = label_pad
        self.crop = crop
        self.max_sample_size = max_sample_size
        self.sample_rate = sample_rate

    def _start(self, item: dict[str, Any], diff: int) -> int:
        if self.crop == "random":
            if "seed" not in item:
                raise KeyError("random crop needs each item's 'seed' (AudioDataset provides it)")
            return int(np.random.default_rng(int(item["seed"])).integers(0, diff + 1))
        return diff // 2 if self.crop == "center" else 0

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        if not items:
            raise ValueError("cannot collate an empty list of items")
        sizes = [int(it["wav"].numel()) for it in items]
        target = max(sizes) if self.pad_audio else min(sizes)
        if self.max_sample_size is not None:
            target = min(target, self.max_sample_size)
        wavs, starts = [], []
        for item, size in zip(items, sizes):
            start = self._start(item, size - target) if size > target else 0
            wavs.append(item["wav"][start:start + target])
            starts.append(start)
        wav, lengths = pad_list(wavs, 0.0)
        batch: dict[str, Any] = {
            "id": [it["id"] for it in items],
            "index": torch.tensor([int(it["index"]) for it in items], dtype=torch.long),
            "wav": wav,
            "lengths": lengths,
            "padding_mask": padding_mask(lengths, wav.shape[1]),
        }
        if all("seed" in it for it in items):
            batch["seed"] = torch.tensor([int(it["seed"]) for it in items], dtype=torch.long)
        for key, kind in self.label_kinds.items():
            values = [it[key] for it in items]
            if kind == "utterance":
                batch[key] = torch.tensor([int(v) for v in values], dtype=torch.long)
                continue
            if kind == "frame":
                offsets = [int(it.get("offset", 0)) for it in items]
                values = self._crop_frames(values, offsets, starts, target, self.frame_label_rates[key])
            padded, label_lengths = pad_ids(values, self.label_pad)
            batch[key] = padded
            batch[f"{key}_lengths"] = label_lengths
        return batch

    def _crop_frames(self, labels: list[torch.Tensor], offsets: list[int], starts: list[int], target: int,
                     rate: float) -> list[torch.Tensor]:
        """Frame labels matching audio crops ``[start, start + target)`` (fairseq HuBERT rules).

        An item the dataset already cropped at ``offset`` samples into its file holds the labels
        from frame ``round(offset * r / sr)``; rounding the absolute position once keeps the two
        crops as aligned as a single one.
        """
        s2f = rate / self.sample_rate
        firsts = [int(round((o + s) * s2f)) - int(round(o * s2f)) for o, s in zip(offsets, starts)]
        count = frame_crop(0, target, rate, self.sample_rate)[1]
        if not self.pad_audio:  # every row must keep the same number of frames
            count = min(count, *(len(t) - f for t, f in zip(labels, firsts)))
        return [t[f:f + count] for t, f in zip(labels, firsts)]

