"""Label quality: phone purity, cluster purity and phone-normalised mutual information (PNMI).

Definitions (Hsu et al. 2021, "HuBERT", section IV-C; fairseq
``examples/hubert/measure_teacher_quality.py``): with ``p(y, z)`` the joint distribution of
the frame-level phone ``y`` and unit ``z`` over all frames,

- phone purity   = ``sum_z max_y p(y, z)``: frame accuracy when every unit is mapped to its
  most frequent phone;
- cluster purity = ``sum_y max_z p(y, z)``: the same with every phone mapped to its most
  frequent unit;
- PNMI           = ``I(y; z) / H(y)``: the fraction of phone uncertainty the units remove.

Units and alignments usually run at different rates (units at 50 or 100 Hz, alignments at
100 Hz). Both follow Kaldi's snip-edges framing with a 25 ms window: frame ``t`` of a stream
at ``rate`` Hz covers ``[t / rate, t / rate + 0.025)`` s (MFCC frames, the 400-sample receptive
field of HuBERT's conv encoder, and the corpus's ``.phn_ali``, whose frame ``j`` holds the phone
at sample ``160 j + 200``). So unit frame ``t`` and alignment frame
``j = floor(t * ali_rate / label_rate)`` have the same centre - the frame fairseq's HuBERT
also picks as the target of model frame ``t``. Sums use exact ``0 log 0 = 0``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from speechssl.data.manifest import FormatError, read_labels

__all__ = ["LabelQuality", "label_quality", "joint_counts", "resample_alignment", "evaluate_label_file"]


@dataclass
class LabelQuality:
    """Quality of unit labels against reference phones (entropies in nats)."""

    phone_purity: float
    cluster_purity: float
    pnmi: float
    mutual_info: float
    phone_entropy: float
    unit_entropy: float
    n_frames: int
    n_phones: int
    n_units: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def label_quality(counts: np.ndarray) -> LabelQuality:
    """Purities and PNMI from a ``(P, U)`` matrix of joint frame counts (phones x units).

    Raises:
        ValueError: the matrix is not 2-D, has negative entries or no frames.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2:
        raise ValueError(f"joint counts must be a (phones, units) matrix, got shape {counts.shape}")
    if (counts < 0).any():
        raise ValueError("joint counts must be non-negative")
    total = counts.sum()
    if total <= 0:
        raise ValueError("no frames to score: the joint count matrix is empty")
    p_xy = counts / total
    p_x = p_xy.sum(axis=1)  # phones
    p_y = p_xy.sum(axis=0)  # units
    nz = p_xy > 0
    mi = float((p_xy[nz] * np.log(p_xy[nz] / np.outer(p_x, p_y)[nz])).sum())
    h_phone, h_unit = _entropy(p_x), _entropy(p_y)
    return LabelQuality(
        phone_purity=float(p_xy.max(axis=0).sum()),
        cluster_purity=float(p_xy.max(axis=1).sum()),
        pnmi=mi / h_phone if h_phone > 0 else math.nan,
        mutual_info=mi, phone_entropy=h_phone, unit_entropy=h_unit,
        n_frames=int(round(total)), n_phones=int((p_x > 0).sum()), n_units=int((p_y > 0).sum()),
    )


def resample_alignment(ali: np.ndarray, ali_rate: float, label_rate: float, n_frames: int) -> np.ndarray:
    """Alignment resampled to the label rate: for each label frame ``t < n_frames``, the
    alignment frame starting at the same time, ``floor(t * ali_rate / label_rate)`` (equal-length
    snip-edges windows: the two frames share their centre; see the module docstring). Indices
    past the end of ``ali`` are dropped, so the result may be shorter than ``n_frames``."""
    ali = np.asarray(ali)
    t = np.arange(n_frames, dtype=np.float64)
    # the tiny epsilon keeps exact ratios (t * 2.0) from rounding down below an integer
    j = np.floor(t * (ali_rate / label_rate) + 1e-9).astype(np.int64)
    return ali[j[j < len(ali)]]


def joint_counts(
    phones: Sequence[np.ndarray], units: Sequence[np.ndarray],
) -> tuple[np.ndarray, list[int], list[int]]:
    """Joint counts of aligned integer sequences (each pair cut to the shorter length).

    Returns:
        ``(counts (P, U), phone_ids, unit_ids)``: rows/columns follow the sorted ids present.
    """
    ph = np.concatenate([np.asarray(p[: min(len(p), len(u))], dtype=np.int64) for p, u in zip(phones, units)]
                        or [np.empty(0, np.int64)])
    un = np.concatenate([np.asarray(u[: min(len(p), len(u))], dtype=np.int64) for p, u in zip(phones, units)]
                        or [np.empty(0, np.int64)])
    phone_ids, pi = np.unique(ph, return_inverse=True)
    unit_ids, ui = np.unique(un, return_inverse=True)
    counts = np.bincount(pi * len(unit_ids) + ui, minlength=len(phone_ids) * len(unit_ids))
    return counts.reshape(len(phone_ids), len(unit_ids)), phone_ids.tolist(), unit_ids.tolist()


def evaluate_label_file(
    km_path: str | Path, ali_path: str | Path, *, label_rate: float, ali_rate: float = 100.0,
    tolerance_s: float = 0.05,
) -> dict[str, float | int]:
    """Score a ``<split>.km`` file against a ``<split>.phn_ali`` frame alignment of the same manifest.

    Args:
        km_path: unit labels, one row per utterance, at ``label_rate`` Hz.
        ali_path: phone alignment (one token per frame; symbols or ids), at ``ali_rate`` Hz.
        label_rate, ali_rate: frame rates in Hz.
        tolerance_s: largest allowed difference between the two durations of a row, seconds.

    Returns:
        The :class:`LabelQuality` fields plus ``n_rows``, ``frame_diff`` (total absolute
        difference in label frames between the two lengths) and ``max_frame_diff``.

    Raises:
        FormatError: row counts differ, a non-integer unit, or a row whose durations differ
            by more than ``tolerance_s`` (file, line and both lengths named).
    """
    km_path, ali_path = Path(km_path), Path(ali_path)
    if label_rate <= 0 or ali_rate <= 0:
        raise ValueError(f"rates must be positive, got label_rate={label_rate}, ali_rate={ali_rate}")
    km_lines, ali_lines = read_labels(km_path), read_labels(ali_path)
    if len(km_lines) != len(ali_lines):
        raise FormatError(f"{km_path} has {len(km_lines)} rows but {ali_path} has {len(ali_lines)}; "
                          "both must follow the same manifest")
    symbols: dict[str, int] = {}
    phones, units = [], []
    frame_diff, max_diff = 0.0, 0.0
    for i, (km, ali) in enumerate(zip(km_lines, ali_lines), start=1):
        try:
            u = np.array(km.split(), dtype=np.int64)
        except ValueError:
            raise FormatError(f"{km_path}:{i}: unit labels must be integers, got {km[:40]!r}") from None
        a = np.array([symbols.setdefault(tok, len(symbols)) for tok in ali.split()], dtype=np.int64)
        expected = len(a) * label_rate / ali_rate
        diff = abs(len(u) - expected)
        if diff > tolerance_s * label_rate:
            raise FormatError(
                f"row {i}: {km_path.name} has {len(u)} frames at {label_rate:g} Hz "
                f"({len(u) / label_rate:.3f} s) but {ali_path.name} has {len(a)} frames at {ali_rate:g} Hz "
                f"({len(a) / ali_rate:.3f} s); the difference exceeds {tolerance_s:g} s - check "
                "--label-rate/--ali-rate and that both files follow the same manifest")
        frame_diff += diff
        max_diff = max(max_diff, diff)
        ph = resample_alignment(a, ali_rate, label_rate, len(u))
        phones.append(ph)
        units.append(u[: len(ph)])
    counts, _, _ = joint_counts(phones, units)
    result: dict[str, float | int] = label_quality(counts).to_dict()
    result.update(n_rows=len(km_lines), frame_diff=round(frame_diff, 3), max_frame_diff=round(max_diff, 3))
    return result
