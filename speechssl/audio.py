"""Audio files in and out: 16 kHz mono float32 waveforms, validated, named in every error.

``load`` returns a ``(S,)`` float32 tensor in ``[-1, 1]`` (S = samples). It refuses, with an
error that names the file, what the fix is and what it expected: a missing, empty, unreadable
or truncated file, NaN/inf samples, several channels (unless ``mono="mean"``) and a sample rate
other than the one asked for (unless ``resample=True``, which uses soxr).

``save`` writes atomically (temporary file + rename), 16-bit PCM WAV by default, quantising
deterministically so the same waveform always gives the same bytes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Sequence

import numpy as np
import soundfile

from speechssl.atomic import atomic_open

if TYPE_CHECKING:
    import torch

__all__ = ["AudioError", "AudioInfo", "info", "load", "load_numpy", "save", "resample", "readable_suffixes",
           "parse_suffixes"]

_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}
# common audio suffixes and the libsndfile format (and subtype, for OGG's codecs) that reads them
_READERS = ((".wav", "WAV", None), (".flac", "FLAC", None), (".ogg", "OGG", "VORBIS"), (".opus", "OGG", "OPUS"),
            (".mp3", "MP3", None), (".aiff", "AIFF", None), (".aif", "AIFF", None))
# libsndfile's log line for a WAV whose data chunk is shorter than its header claims.
_WAV_SIZE_MISMATCH = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_WAV_UNKNOWN_SIZES = (0, 0xFFFFFFFF, 0x7FFFFFFF)  # streaming writers leave these in the header


class AudioError(ValueError):
    """An audio file cannot be used as it is; the message names the file and the fix."""


@dataclass(frozen=True)
class AudioInfo:
    """What an audio file's header says.

    Attributes:
        path: the file.
        sample_rate: samples per second (Hz).
        num_samples: samples per channel (S).
        num_channels: channels.
        format: container (``WAV``, ``FLAC``, ...).
        subtype: sample encoding (``PCM_16``, ``FLOAT``, ...).
    """

    path: Path
    sample_rate: int
    num_samples: int
    num_channels: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_samples / self.sample_rate


def readable_suffixes() -> tuple[str, ...]:
    """The common audio file suffixes this machine's libsndfile can decode, in a fixed order.

    ``(".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif")`` minus those whose format
    (MP3 needs libsndfile >= 1.1) or codec is missing.
    """
    formats = soundfile.available_formats()
    out = []
    for suffix, fmt, subtype in _READERS:
        if fmt in formats and (subtype is None or subtype in soundfile.available_subtypes(fmt)):
            out.append(suffix)
    return tuple(out)


def parse_suffixes(ext: str | Sequence[str]) -> tuple[str, ...]:
    """File suffixes from ``--ext``: ``"flac"``, ``".wav,.flac"`` or ``["wav", "MP3"]`` ->
    ``(".flac",)``, ``(".wav", ".flac")``, ``(".wav", ".mp3")`` (lower case, dotted, no repeats)."""
    items = ext.split(",") if isinstance(ext, str) else list(ext)
    out = tuple(dict.fromkeys("." + e.strip().lstrip(".").lower() for e in items if e.strip().lstrip(".")))
    if not out:
        raise ValueError(f"no file extension given (--ext {ext!r}); expected e.g. --ext wav,flac")
    return out


def info(path: str | Path) -> AudioInfo:
    """Read an audio file's header.

    Raises:
        FileNotFoundError: no such file.
        AudioError: not a readable audio file, or a WAV whose data is truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        i = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"{path}: not a readable audio file ({exc}); "
                         f"expected {', '.join(readable_suffixes())} that libsndfile can decode") from None
    if i.format == "WAV" or i.format == "WAVEX":
        m = _WAV_SIZE_MISMATCH.search(i.extra_info or "")
        if m and int(m.group(1)) not in _WAV_UNKNOWN_SIZES and int(m.group(1)) > int(m.group(2)):
            raise AudioError(
                f"{path}: truncated WAV: the header announces {m.group(1)} bytes of audio but the "
                f"file holds {m.group(2)}; re-copy or re-encode the file")
    return AudioInfo(path=path, sample_rate=int(i.samplerate), num_samples=int(i.frames),
                     num_channels=int(i.channels), format=str(i.format), subtype=str(i.subtype))


def resample(wav: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample ``(S,)`` or ``(S, C)`` float audio with soxr (high quality, delay-compensated).

    Returns ``(round(S * new_rate / orig_rate),)`` (or ``(.., C)``) in the input's dtype.
    """
    return _soxr_resample(wav, orig_rate, new_rate)


def _soxr_resample(wav: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    if orig_rate == new_rate:
        return wav
    import soxr

    out = soxr.resample(wav, orig_rate, new_rate, quality="HQ")
    return np.ascontiguousarray(out, dtype=wav.dtype)


def load_numpy(path: str | Path, sample_rate: int = 16000, resample: bool = False,
               mono: Literal["error", "mean", "first"] = "error") -> np.ndarray:
    """Like :func:`load`, returning a ``(S,)`` float32 numpy array."""
    path = Path(path)
    meta = info(path)
    if meta.num_samples == 0:
        raise AudioError(f"{path}: empty audio file (0 samples); remove it from the manifest or re-create it")
    if meta.num_channels > 1 and mono == "error":
        raise AudioError(
            f"{path}: has {meta.num_channels} channels, expected mono; convert the folder once with "
            "`speechssl audio prepare SRC DST --mono mean` (or --mono left / --mono right)")
    if mono not in ("error", "mean", "first"):
        raise ValueError(f"mono must be 'error', 'mean' or 'first', got {mono!r}")
    if meta.sample_rate != sample_rate and not resample:
        raise AudioError(
            f"{path}: sample rate is {meta.sample_rate} Hz, expected {sample_rate} Hz; convert the folder "
            f"once with `speechssl audio prepare SRC DST --sample-rate {sample_rate}` (soxr, mono)")
    try:
        data, _ = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"{path}: cannot decode audio ({exc}); the file is damaged or truncated") from None
    if data.shape[0] < meta.num_samples:
        raise AudioError(
            f"{path}: truncated: the header announces {meta.num_samples} samples but only "
            f"{data.shape[0]} could be decoded; re-copy or re-encode the file")
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty audio file (0 samples decoded)")
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(np.argmin(finite.all(axis=1)))
        raise AudioError(f"{path}: contains NaN or infinite samples (first at sample {bad}); "
                         "the file is corrupt or was written from a diverged computation")
    wav = data[:, 0] if data.shape[1] == 1 or mono == "first" else data.mean(axis=1)
    wav = np.ascontiguousarray(wav, dtype=np.float32)
    if meta.sample_rate != sample_rate:
        wav = _soxr_resample(wav, meta.sample_rate, sample_rate)
    return wav


def load(path: str | Path, sample_rate: int = 16000, resample: bool = False,
         mono: Literal["error", "mean", "first"] = "error") -> "torch.Tensor":
    """Load an audio file as a mono float32 waveform.

    Args:
        path: WAV/FLAC/OGG file.
        sample_rate: the rate the caller expects, in Hz (16 kHz everywhere in speechssl).
        resample: convert other rates to ``sample_rate`` with soxr instead of raising.
        mono: what to do with several channels: ``"error"`` (default), ``"mean"`` or ``"first"``.

    Returns:
        ``(S,)`` float32 tensor, values in ``[-1, 1]`` for integer-PCM files.

    Raises:
        FileNotFoundError: no such file.
        AudioError (a ValueError): unreadable, empty, truncated, NaN/inf, multi-channel or
            wrong-rate file; the message names the file, what was found and the fix.
    """
    import torch

    return torch.from_numpy(load_numpy(path, sample_rate, resample, mono))


def save(path: str | Path, wav: "torch.Tensor | np.ndarray", sample_rate: int = 16000,
         subtype: str = "PCM_16") -> None:
    """Write a mono waveform atomically.

    Args:
        path: output file; its suffix picks the container (``.wav``, ``.flac``, ``.ogg``).
        wav: ``(S,)`` float waveform in ``[-1, 1]`` (tensor or array).
        sample_rate: in Hz.
        subtype: ``PCM_16`` (default), ``PCM_24``, ``PCM_32`` or ``FLOAT``.

    Raises:
        ValueError: not 1-D, empty, NaN/inf, or (for integer PCM) samples outside ``[-1, 1]``.
    """
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown audio suffix {path.suffix!r}; use one of {sorted(_FORMATS)}")
    if not isinstance(wav, np.ndarray):
        wav = wav.detach().cpu().numpy()
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise ValueError(f"{path}: expected a mono waveform of shape (S,), got shape {wav.shape}")
    if wav.size == 0:
        raise ValueError(f"{path}: refusing to write an empty waveform")
    if not np.isfinite(wav).all():
        raise ValueError(f"{path}: waveform contains NaN or infinite samples")
    if subtype.startswith("PCM"):
        peak = float(np.abs(wav).max())
        if peak > 1.0:
            raise ValueError(f"{path}: samples reach {peak:.3f}, outside [-1, 1] for {subtype}; "
                             "scale the waveform (e.g. wav / wav.abs().max()) before saving")
    data: np.ndarray
    if subtype == "PCM_16":
        # Quantise here, not in libsndfile, so the bytes do not depend on its rounding mode.
        data = np.clip(np.rint(wav.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    else:
        data = wav.astype(np.float32)
    with atomic_open(path, "wb") as f:
        soundfile.write(f, data, sample_rate, format=fmt, subtype=subtype)
