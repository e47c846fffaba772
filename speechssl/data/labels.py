"""Label files that travel with the items of a manifest, and how they are batched.

Three kinds of labels (see :class:`LabelSpec`):

- ``frame``: one id per frame at ``label_rate`` Hz (``.km`` units, ``.phn_ali``); audio only,
  cropped in step with the audio, with fairseq HuBERT's arithmetic (:func:`frame_crop`).
- ``sequence``: a token sequence encoded with a :class:`~speechssl.data.manifest.Dictionary`
  (``.ltr``, ``.wrd``, ``.phn``); never cropped.
- ``utterance``: one class per item (``.spk``, ``.kw``, ``.intent``, ``.topic``, an image class).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

import torch

from speechssl.data.manifest import (
    Dictionary, FormatError, Manifest, check_label_frames, read_dict, read_labels,
)

__all__ = ["LabelKind", "LabelSpec", "LabelFile", "frame_crop", "check_label_keys", "pad_ids",
           "collate_labels"]

_log = logging.getLogger(__name__)

LabelKind = Literal["frame", "sequence", "utterance"]


@dataclass(frozen=True)
class LabelSpec:
    """One label file to load beside a manifest's items.

    Attributes:
        path: the label file (one line per manifest row).
        kind: ``"frame"``, ``"sequence"`` or ``"utterance"`` (see the module docstring).
        name: key of the label in items and batches; defaults to the file's extension
            (``train.km`` → ``"km"``).
        label_rate: frames per second of a ``frame`` label (50 for units of 20 ms frames,
            100 for 10 ms frames); required for ``frame``, unused otherwise.
        dictionary: symbols → ids. Required for ``sequence`` labels. Optional for ``frame``
            labels (without one the symbols must be integers and are used as ids). For
            ``utterance`` labels, without one the classes are the sorted distinct values of the
            file; pass the same dictionary to every split so ids agree.
        tolerance_s: allowed difference between a frame label row's duration and its audio's.
    """

    path: str | Path
    kind: LabelKind
    name: str | None = None
    label_rate: float | None = None
    dictionary: Dictionary | str | Path | None = None
    tolerance_s: float = 0.1

    @property
    def key(self) -> str:
        """The label's key in items and batches."""
        return self.name or Path(self.path).suffix.lstrip(".")


def frame_crop(start: int, size: int, label_rate: float, sample_rate: int) -> tuple[int, int]:
    """Frame range ``(first, count)`` of labels at ``label_rate`` Hz matching an audio crop.

    The crop starts at sample ``start`` and holds ``size`` samples; fairseq HuBERT rounds both
    ends: ``first = round(start * r / sr)``, ``count = round(size * r / sr)``.
    """
    s2f = label_rate / sample_rate
    return int(round(start * s2f)), int(round(size * s2f))


class LabelFile:
    """A loaded label file: its rows and how to turn a row into an id tensor or class.

    Args:
        spec: what to load.
        manifest: the manifest the file's rows follow (row counts must agree).
        sample_rate: audio sample rate of the manifest's sizes (Hz), for ``frame`` labels.

    Raises:
        FormatError / FileNotFoundError / ValueError: naming the label file (and line).
    """

    def __init__(self, spec: LabelSpec, manifest: Manifest, sample_rate: int) -> None:
        if spec.kind not in ("frame", "sequence", "utterance"):
            raise ValueError(f"{spec.path}: label kind must be 'frame', 'sequence' or 'utterance', "
                             f"got {spec.kind!r}")
        self.spec = spec
        self.key = spec.key
        self.path = Path(spec.path)
        self.rows = read_labels(self.path, expected_rows=len(manifest))
        dictionary = spec.dictionary
        if isinstance(dictionary, (str, Path)):
            dictionary = read_dict(dictionary)
        if spec.kind == "frame":
            if spec.label_rate is None or spec.label_rate <= 0:
                raise ValueError(f"{self.path}: a frame label needs label_rate > 0 (frames per second), "
                                 f"got {spec.label_rate}")
            check_label_frames(manifest, self.rows, spec.label_rate, label_path=self.path,
                               sample_rate=sample_rate, tolerance_s=spec.tolerance_s)
        elif spec.kind == "sequence" and dictionary is None:
            raise ValueError(f"{self.path}: a sequence label needs a dictionary (e.g. dict.{self.key}.txt)")
        elif spec.kind == "utterance" and dictionary is None:
            classes = sorted({r.strip() for r in self.rows})
            dictionary = Dictionary(classes, [0] * len(classes))
            _log.info("%s: %d classes from the file itself (pass a dictionary to share ids across splits)",
                      self.path, len(classes))
        self.dictionary: Dictionary | None = dictionary
        self._check_rows()

    def _check_rows(self) -> None:
        """Every row's tokens, up front (not when the row is first drawn): integers >= 0 for
        frame labels without a dictionary, symbols of the dictionary otherwise; utterance
        labels one class each. Errors name the file, the line and the token."""
        for i, row in enumerate(self.rows):
            if self.spec.kind == "utterance":
                if not row.strip():
                    raise FormatError(f"{self.path}:{i + 1}: empty line; expected one class per row")
                self.get(i)
                continue
            if self.dictionary is not None:
                self._encode(row, i)
                continue
            for token in row.split():
                if not (token.isdigit() and token.isascii()):
                    raise FormatError(f"{self.path}:{i + 1}: frame label {token!r} is not a non-negative "
                                      "integer unit id (give a dictionary, e.g. dict.km.txt, for symbols)")

    def _encode(self, row: str, row_index: int) -> list[int]:
        tokens = row.split()
        if self.dictionary is not None:
            try:
                return self.dictionary.encode(tokens)
            except KeyError as exc:
                raise FormatError(f"{self.path}:{row_index + 1}: {exc.args[0]}") from None
        try:
            ids = [int(t) for t in tokens]
            if any(x < 0 for x in ids):
                raise ValueError
            return ids
        except ValueError:
            raise FormatError(f"{self.path}:{row_index + 1}: frame labels without a dictionary must be "
                              f"non-negative integers, got {row[:40]!r}") from None

    def get(self, row_index: int) -> torch.Tensor | int:
        """Row ``row_index`` (0-based) as a class id (``utterance``) or an id tensor ``(T,)`` int64."""
        row = self.rows[row_index]
        if self.spec.kind == "utterance":
            assert self.dictionary is not None
            try:
                return self.dictionary.index(row.strip())
            except KeyError as exc:
                raise FormatError(f"{self.path}:{row_index + 1}: {exc.args[0]}") from None
        return torch.tensor(self._encode(row, row_index), dtype=torch.long)


def check_label_keys(keys: Iterable[str], reserved: Iterable[str]) -> None:
    """Raise a ValueError if a label key is empty, reserved or given twice."""
    keys, reserved = list(keys), frozenset(reserved)
    for key in keys:
        if key in reserved or not key:
            raise ValueError(f"label name {key!r} is reserved or empty; give the LabelSpec a name= "
                             f"other than {sorted(reserved)}")
        if keys.count(key) > 1:
            raise ValueError(f"two labels are named {key!r}; give each LabelSpec a distinct name=")


def pad_ids(values: list[torch.Tensor], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D id tensors into ``(B, T_max)`` int64 with ``pad``; also their lengths ``(B,)``."""
    lengths = torch.tensor([len(v) for v in values], dtype=torch.long)
    out = torch.full((len(values), int(lengths.max()) if len(values) else 0), pad, dtype=torch.long)
    for i, v in enumerate(values):
        out[i, :len(v)] = v
    return out, lengths


def collate_labels(items: list[Mapping[str, Any]], label_kinds: Mapping[str, str], pad: int) -> dict[str, Any]:
    """Batch the ``utterance`` and ``sequence`` labels of ``items``.

    Returns ``{<utterance label>: (B,) int64, <sequence label>: (B, T) int64 padded with pad,
    "<sequence label>_lengths": (B,) int64}``. Frame labels are the audio collater's business.
    """
    batch: dict[str, Any] = {}
    for key, kind in label_kinds.items():
        values = [it[key] for it in items]
        if kind == "utterance":
            batch[key] = torch.tensor([int(v) for v in values], dtype=torch.long)
        elif kind == "sequence":
            batch[key], batch[f"{key}_lengths"] = pad_ids(values, pad)
        else:
            raise ValueError(f"label {key!r}: only 'utterance' and 'sequence' labels batch here, got {kind!r}")
    return batch


class LabelledCollater:
    """Base of the per-kind collaters: ids, indices and labels around the kind's own tensors.

    Subclasses implement :meth:`collate_items`. Batch: ``{"id": list[str], "index": (B,) int64,
    <collate_items' keys>, <labels as collate_labels>}``.

    Args:
        label_kinds: label key → ``"utterance"`` or ``"sequence"``.
        label_pad: id written into sequence-label padding.
    """

    def __init__(self, label_kinds: Mapping[str, str] | None = None, *, label_pad: int = -100) -> None:
        self.label_kinds = dict(label_kinds or {})
        self.label_pad = label_pad

    def collate_items(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """The kind's tensors of a non-empty list of items."""
        raise NotImplementedError

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        if not items:
            raise ValueError("cannot collate an empty list of items")
        batch: dict[str, Any] = {"id": [it["id"] for it in items],
                                 "index": torch.tensor([int(it["index"]) for it in items], dtype=torch.long)}
        batch.update(self.collate_items(items))
        batch.update(collate_labels(items, self.label_kinds, self.label_pad))
        return batch
