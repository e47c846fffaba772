"""Two-speaker mixtures for diarization, built deterministically from single-speaker utterances.

Each mixture takes one utterance of each of two different speakers; the second starts at a
random point between 30% into the first and 0.5 s after its end, so mixtures range from
heavy overlap to a pause between turns, and is scaled to a random level within ±5 dB of the
first. Who speaks when comes from the sources' voice activity: their ``.phn_ali`` frame
alignments when present (frames whose phone is not ``sil``), else an energy detector. Everything
depends only on the source manifest, the speaker labels, the split name and the seed.

Output (a directory per split, written under a temporary name and renamed when complete)::

    <split>.tsv      manifest of the mixtures
    <split>.rttm     NIST RTTM: SPEAKER <mixture-id> 1 <start> <duration> <NA> <NA> <speaker> <NA> <NA>

The RTTM is also how real data plugs in (SUPERB's LibriMix diarization ships RTTM files).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechssl.atomic import atomic_write_text, temp_dir_beside
from speechssl.data.manifest import Manifest, write_manifest
from speechssl.downstream.vad import voice_activity

__all__ = ["Segment", "MixtureConfig", "build_mixtures", "read_rttm", "write_rttm", "rasterize", "voice_activity"]

_log = logging.getLogger(__name__)
_SR = 16000
_SHIFT = 160  # 10 ms activity resolution


@dataclass(frozen=True)
class Segment:
    """A speaker's turn: ``speaker`` talks from ``start`` to ``end`` seconds."""

    speaker: str
    start: float
    end: float


@dataclass
class MixtureConfig:
    """How many mixtures and how they overlap."""

    num_train: int = 600  # mixtures in the training split
    num_eval: int = 120  # mixtures in each other split
    min_start: float = 0.3  # the second speaker starts at >= this fraction of the first utterance
    max_gap_s: float = 0.5  # ... and at most this long after its end
    level_db: float = 5.0  # second speaker's level: ±level_db around the first's
    seed: int = 0  # mixtures depend on this, not on the run's seed, so runs compare on the same data


def _segments(active: np.ndarray, speaker: str, offset_s: float, min_gap_frames: int = 10) -> list[Segment]:
    """Turn a 10 ms activity mask into segments, bridging pauses shorter than ``min_gap_frames``."""
    idx = np.flatnonzero(active)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > min_gap_frames)
    starts = np.r_[idx[0], idx[breaks + 1]]
    ends = np.r_[idx[breaks], idx[-1]] + 1
    step = _SHIFT / _SR
    return [Segment(speaker, round(offset_s + s * step, 3), round(offset_s + e * step, 3))
            for s, e in zip(starts, ends)]


def write_rttm(path: str | Path, segments: dict[str, list[Segment]]) -> None:
    """Write ``{recording_id: segments}`` as an RTTM file (atomically)."""
    lines = []
    for rec, segs in segments.items():
        for s in sorted(segs, key=lambda s: (s.start, s.speaker)):
            lines.append(f"SPEAKER {rec} 1 {s.start:.3f} {s.end - s.start:.3f} <NA> <NA> {s.speaker} <NA> <NA>")
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_rttm(path: str | Path) -> dict[str, list[Segment]]:
    """Read an RTTM file into ``{recording_id: segments}`` (SPEAKER lines only)."""
    out: dict[str, list[Segment]] = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        f = line.split()
        if not f or f[0] != "SPEAKER":
            continue
        if len(f) < 8:
            raise ValueError(f"{path}:{lineno}: an RTTM SPEAKER line needs at least 8 fields, got {len(f)}")
        try:
            start, dur = float(f[3]), float(f[4])
        except ValueError:
            raise ValueError(f"{path}:{lineno}: start and duration must be numbers, got {f[3]!r}, {f[4]!r}") from None
        if not (math.isfinite(start) and math.isfinite(dur)) or start < 0 or dur < 0:
            raise ValueError(f"{path}:{lineno}: expected a start >= 0 and a duration >= 0 in seconds, got "
                             f"{f[3]!r}, {f[4]!r}")
        out.setdefault(f[1], []).append(Segment(f[7], start, start + dur))
    return out


def rasterize(segments: list[Segment], speakers: list[str], num_frames: int, frame_shift_s: float) -> np.ndarray:
    """``(T, S)`` 0/1 activity: frame ``t`` is active for a speaker when its centre
    ``(t + 0.5) * frame_shift_s`` falls inside one of the speaker's segments."""
    out = np.zeros((num_frames, len(speakers)), dtype=np.float32)
    centres = (np.arange(num_frames) + 0.5) * frame_shift_s
    col = {s: i for i, s in enumerate(speakers)}
    for seg in segments:
        out[(centres >= seg.start) & (centres < seg.end), col[seg.speaker]] = 1.0
    return out


def build_mixtures(source: Manifest, speakers: list[str], split: str, out_root: Path, cfg: MixtureConfig,
                   num: int, phn_ali: list[str] | None = None) -> Path:
    """Build (or find) the mixtures of ``split``; returns the directory holding ``<split>.tsv``.

    Args:
        source: single-speaker utterances.
        speakers: speaker label of each source utterance.
        split: split name (part of the seed and of the file names).
        out_root: parent directory; the mixtures go to ``out_root/<split>-<key>``.
        cfg: overlap settings and seed.
        num: number of mixtures.
        phn_ali: the sources' ``.phn_ali`` rows, if available.
    """
    from speechssl import audio

    key = hashlib.sha256(json.dumps({
        # v2: activity from alignments maps phone ids to symbols (v1 took every id for speech)
        "v": 2, "root": str(source.root), "paths": source.paths, "sizes": source.sizes, "spk": speakers,
        "split": split, "cfg": cfg.__dict__, "num": num, "ali": phn_ali is not None,
    }, sort_keys=True).encode()).hexdigest()[:16]
    final = Path(out_root) / f"{split}-{key}"
    if (final / f"{split}.rttm").is_file():
        return final
    by_spk: dict[str, list[int]] = {}
    for i, s in enumerate(speakers):
        by_spk.setdefault(s, []).append(i)
    names = sorted(by_spk)
    if len(names) < 2:
        raise ValueError(f"{source.source}: diarization mixtures need at least 2 speakers, found {len(names)}")
    rng = np.random.default_rng([cfg.seed, zlib.crc32(split.encode())])
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(final)  # removes the staging dirs of killed runs; the user's umask
    try:
        rows, rttm = [], {}
        for m in range(num):
            a_spk, b_spk = rng.choice(len(names), size=2, replace=False)
            a = int(rng.choice(by_spk[names[a_spk]]))
            b = int(rng.choice(by_spk[names[b_spk]]))
            wa, wb = audio.load_numpy(source.audio_path(a)), audio.load_numpy(source.audio_path(b))
            start = int(len(wa) * rng.uniform(cfg.min_start, 1.0) + rng.uniform(0, cfg.max_gap_s) * _SR)
            mix = np.zeros(max(len(wa), start + len(wb)), dtype=np.float64)
            mix[:len(wa)] += wa
            gain = _rms(wa) / max(_rms(wb), 1e-8) * 10 ** (rng.uniform(-cfg.level_db, cfg.level_db) / 20)
            mix[start:start + len(wb)] += wb * gain
            mix *= min(1.0, 0.95 / max(np.abs(mix).max(), 1e-8))
            rec = f"mix{m:05d}"
            audio.save(tmp / "wav" / f"{rec}.wav", mix.astype(np.float32))
            rows.append((f"wav/{rec}.wav", len(mix)))
            segs = _segments(voice_activity(wa, phn_ali[a] if phn_ali else None), names[a_spk], 0.0)
            segs += _segments(voice_activity(wb, phn_ali[b] if phn_ali else None), names[b_spk], start / _SR)
            rttm[rec] = segs
        write_manifest(tmp / f"{split}.tsv", ".", rows)   # root relative to the .tsv: survives the rename
        write_rttm(tmp / f"{split}.rttm", rttm)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / f"{split}.rttm").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _log.info("built %d two-speaker mixtures for %s in %s", num, split, final)
    return final


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2) + 1e-12))
