"""Audio dataset over a manifest and any number of label files.

Three kinds of labels travel with the audio (see :class:`~speechssl.data.labels.LabelSpec`):

- ``frame``: one id per frame at ``label_rate`` Hz (``.km`` units, ``.phn_ali``); cropped in step
  with the audio, with fairseq HuBERT's arithmetic (a crop starting at sample ``s`` of
  ``n`` samples keeps frames ``[round(s * r / sr), round(s * r / sr) + round(n * r / sr))``).
- ``sequence``: a token sequence encoded with a :class:`~speechssl.data.manifest.Dictionary`
  (``.ltr``, ``.wrd``, ``.phn``); never cropped.
- ``utterance``: one class per utterance (``.spk``, ``.kw``, ``.intent``, ``.topic``).

Randomness (the training crop, :attr:`item["seed"]`) is drawn from a generator seeded by
``(seed, epoch, index)``, never from global RNG, so distributed and resumed runs see the same
data.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from speechssl.audio import load as load_audio
from speechssl.data.base import SizedDataset
from speechssl.data.collate import AudioCollater
from speechssl.data.labels import LabelFile, LabelKind, LabelSpec, check_label_keys, frame_crop
from speechssl.data.manifest import Manifest, read_manifest, validate_manifest

# LabelSpec, LabelKind and frame_crop live in speechssl.data.labels; re-exported here.
__all__ = ["LabelSpec", "LabelKind", "AudioDataset", "audio_split", "split_manifest", "frame_crop", "RESERVED_KEYS"]

_log = logging.getLogger(__name__)

#: Item and batch keys the dataset and collater use themselves; a label may not be named so.
RESERVED_KEYS = frozenset({"id", "index", "seed", "wav", "lengths", "padding_mask", "offset"})

CropMode = Literal["random", "center", "start"]


class AudioDataset(SizedDataset):
    """Utterances of a manifest with their labels, cropped to at most ``max_sample_size``.

    Items are dicts::

        {"id": str, "index": int, "seed": int, "offset": int,
         "wav": Tensor (S,) float32 at 16 kHz, <label key>: Tensor (T,) int64 | int, ...}

    ``offset`` is where the crop starts in the file (samples); ``seed`` is a per-item,
    per-epoch integer drawn from ``(seed, epoch, index)`` for any later random choice (the
    collater's crop, a task's masking), so those stay reproducible too.

    Args:
        manifest: a ``Manifest`` or the path of a ``<split>.tsv``.
        labels: label files to load (:class:`LabelSpec`).
        max_sample_size: crop longer utterances to this many samples (None: never crop).
        min_sample_size: drop utterances shorter than this (logged with the count).
        crop: where the crop starts: ``"random"`` (training; from ``(seed, epoch, index)``),
            ``"center"`` or ``"start"`` (evaluation).
        normalize: layer-normalise each waveform (zero mean, unit variance over the whole
            utterance, before cropping), as fairseq's ``normalize=True``.
        seed: base seed of the random crop and of ``item["seed"]``.
        sample_rate: expected sample rate; other rates are errors.

    Attributes:
        sizes: samples per item after cropping, for ``max_tokens`` batching.
        rows: manifest row of each item (items are the kept rows, in manifest order).

    Raises:
        FormatError / FileNotFoundError: a bad manifest or label file (names file and line).
        ValueError: bad options, or every utterance filtered out.
    """

    def __init__(self, manifest: Manifest | str | Path, labels: Sequence[LabelSpec] = (), *,
                 max_sample_size: int | None = None, min_sample_size: int = 0, crop: CropMode = "random",
                 normalize: bool = False, seed: int = 0, sample_rate: int = 16000) -> None:
        self.manifest = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
        if crop not in ("random", "center", "start"):
            raise ValueError(f"crop must be 'random', 'center' or 'start', got {crop!r}")
        if max_sample_size is not None and max_sample_size <= 0:
            raise ValueError(f"max_sample_size must be positive or None, got {max_sample_size}")
        self.max_sample_size = max_sample_size
        self.min_sample_size = int(min_sample_size)
        self.crop = crop
        self.normalize = normalize
        self.seed = int(seed)
        self.sample_rate = sample_rate
        self.epoch = 1

        self.labels = [LabelFile(spec, self.manifest, sample_rate) for spec in labels]
        check_label_keys([lab.key for lab in self.labels], RESERVED_KEYS)

        self._ids = self.manifest.ids()
        sizes = np.asarray(self.manifest.sizes, dtype=np.int64)
        keep = sizes >= self.min_sample_size
        n_short = int((~keep).sum())
        src = self.manifest.source or "manifest"
        if n_short:
            _log.warning("%s: dropped %d of %d utterances shorter than min_sample_size=%d samples",
                         src, n_short, len(sizes), self.min_sample_size)
        self.rows = np.flatnonzero(keep)
        if len(self.rows) == 0:
            raise ValueError(f"{src}: every utterance is shorter than min_sample_size={self.min_sample_size}")
        kept = sizes[self.rows]
        self.sizes = np.minimum(kept, max_sample_size) if max_sample_size else kept
        _log.info("%s: %d utterances, %.1f min, max_sample_size=%s, crop=%s, normalize=%s", src, len(self.rows),
                  kept.sum() / sample_rate / 60, max_sample_size, crop, normalize)

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (1-based) whose random crops and item seeds to draw."""
        self.epoch = int(epoch)

    @property
    def frame_label_rates(self) -> dict[str, float]:
        """Label rate (Hz) of each frame label, by key."""
        return {lab.key: float(lab.spec.label_rate) for lab in self.labels  # type: ignore[arg-type]
                if lab.spec.kind == "frame"}

    @property
    def label_kinds(self) -> dict[str, str]:
        """Kind of each label, by key."""
        return {lab.key: lab.spec.kind for lab in self.labels}

    def _load(self, row: int) -> torch.Tensor:
        path = self.manifest.audio_path(row)
        if not path.is_file():
            raise FileNotFoundError(f"audio file not found: {path} (row {row + 2} of {self.manifest.source})")
        wav = load_audio(path, sample_rate=self.sample_rate)
        if wav.numel() != self.manifest.sizes[row]:
            raise ValueError(f"{path}: has {wav.numel()} samples but the manifest "
                             f"{self.manifest.source or ''} says {self.manifest.sizes[row]}; rebuild the manifest")
        return wav

    def _crop_start(self, size: int, target: int, rng: np.random.Generator) -> int:
        diff = size - target
        if diff <= 0:
            return 0
        if self.crop == "random":
            return int(rng.integers(0, diff + 1))
        if self.crop == "center":
            return diff // 2
        return 0

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = int(self.rows[index])
        wav = self._load(row)
        if self.normalize:
            with torch.no_grad():
                wav = F.layer_norm(wav, wav.shape)
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        item_seed = int(rng.integers(0, 2**62))
        size = wav.numel()
        target = min(size, self.max_sample_size) if self.max_sample_size else size
        start = self._crop_start(size, target, rng)
        item: dict[str, Any] = {
            "id": self._ids[row],
            "index": int(index), "seed": item_seed, "offset": start,
            "wav": wav[start:start + target].contiguous(),
        }
        for lab in self.labels:
            value = lab.get(row)
            if lab.spec.kind == "frame" and target < size:
                rate = float(lab.spec.label_rate)  # type: ignore[arg-type]
                first, count = frame_crop(start, target, rate, self.sample_rate)
                value = value[first:first + count]  # type: ignore[index]
            item[lab.key] = value
        return item

    def collater(self, *, pad_audio: bool = True, label_pad: int = -100):
        """An :class:`~speechssl.data.collate.AudioCollater` matching this dataset's labels and crop."""
        return AudioCollater(label_kinds=self.label_kinds, frame_label_rates=self.frame_label_rates,
                             pad_audio=pad_audio, label_pad=label_pad, crop=self.crop,
                             max_sample_size=self.max_sample_size, sample_rate=self.sample_rate)


def split_manifest(data_dir: str | Path, split: str) -> Path:
    """``<data_dir>/<split>.tsv``, or FileNotFoundError naming it and the split."""
    manifest = Path(data_dir) / f"{split}.tsv"
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest not found: {manifest} (split {split!r} of task.data)")
    return manifest


def audio_split(data_dir: str | Path, split: str, labels: Sequence[LabelSpec] = (), *, train: bool,
                max_sample_size: int | None, min_sample_size: int, random_crop: bool, seed: int,
                sample_rate: int) -> AudioDataset:
    """The pretraining dataset of ``<data_dir>/<split>.tsv``, as every audio method reads it.

    Training crops start at random when ``random_crop`` (else at the beginning, as validation
    always does). Waveforms are not normalised here: models that want it do it themselves.

    Raises:
        FileNotFoundError: no such manifest (naming it and the split).
    """
    manifest = validate_manifest(split_manifest(data_dir, split), sample_rate=sample_rate)  # before any work
    return AudioDataset(manifest, labels, max_sample_size=max_sample_size, min_sample_size=min_sample_size,
                        crop="random" if (train and random_crop) else "start", normalize=False, seed=seed,
                        sample_rate=sample_rate)
