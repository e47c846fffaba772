"""``speechssl audio prepare SRC DST``: a folder of any audio -> a 16 kHz mono corpus + manifests.

    speechssl audio prepare recordings/ data/mine                 # DST/<same paths>.wav + train/valid.tsv
    speechssl audio prepare recordings/ data/mine --mono left --ext wav,flac --valid-percent 0.1

Every file under SRC whose suffix is in ``--ext`` (default: the common ones libsndfile reads
here) is decoded to float, reduced to one channel (``--mono mean|left|right``), resampled with
soxr (high quality, as :func:`speechssl.audio.resample`) and written to the same relative path
under DST with the suffix ``.wav`` (or ``.flac``), 16-bit PCM by default. Then DST gets the
manifests ``speechssl manifest DST --dest DST`` would write (the same function writes them).

Before anything is written, every file's header is read: files that libsndfile cannot read,
and empty ones, are refused in one error that names them. Two sources that would land on one
output (``a.wav`` and ``a.flac``) are refused too.

Resumable: ``DST/.audio_prepare.jsonl`` records, per output, the source's sha256 and the
options; a rerun converts only files whose content or options changed (or whose output is
missing), removes outputs whose source is gone, and logs what it reused. Outputs are written
atomically, so an interrupted run leaves complete files only.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["add_arguments", "main", "prepare_audio", "PrepareSummary", "MONO_CHOICES"]

_log = logging.getLogger(__name__)

#: ``--mono``: average the channels, or keep the first (left) or second (right)
MONO_CHOICES = ("mean", "left", "right")
_OUT_FORMATS = ("wav", "flac")
_SUBTYPES = ("PCM_16", "PCM_24", "FLOAT")
JOURNAL = ".audio_prepare.jsonl"
_SHOW = 5  # files named in a refusal


@dataclass
class PrepareSummary:
    """What :func:`prepare_audio` did.

    Attributes:
        files: outputs in DST (one per source file).
        converted: files decoded and written in this run.
        reused: files kept from an earlier run (same source content and options).
        removed: outputs of an earlier run whose source is gone, deleted.
        downmixed: multi-channel sources reduced to one channel.
        resampled: sources at another rate than ``sample_rate``.
        clipped: converted files with samples beyond [-1, 1] after resampling (clipped).
        seconds: total audio duration of DST at ``sample_rate``.
        splits: manifest rows per split.
    """

    files: int
    converted: int
    reused: int
    removed: int
    downmixed: int
    resampled: int
    clipped: int
    seconds: float
    splits: dict[str, int]


def _options(sample_rate: int, mono: str, out_format: str, subtype: str) -> dict[str, Any]:
    import soxr

    return {"sample_rate": sample_rate, "mono": mono, "format": out_format, "subtype": subtype,
            "resampler": f"soxr {soxr.__version__} HQ"}


def _scan(src: Path, suffixes: Sequence[str], exclude: Path | None, must_contain: str | None) -> tuple[list[Path], dict[str, int]]:
    """Sorted audio files under ``src`` (not under ``exclude``) and a count of the other suffixes."""
    files, others = [], {}
    for dirpath, dirnames, filenames in os.walk(src):
        here = Path(dirpath)
        if exclude is not None:
            dirnames[:] = [d for d in dirnames if (here / d).resolve() != exclude]
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            path = here / name
            suffix = path.suffix.lower()
            if suffix not in suffixes:
                if not name.startswith("."):
                    others[suffix or "(none)"] = others.get(suffix or "(none)", 0) + 1
                continue
            if must_contain and must_contain not in os.path.realpath(path):
                continue
            files.append(path)
    return sorted(files), others


def _refuse(what: str, items: list[str], fix: str) -> None:
    shown = "; ".join(items[:_SHOW]) + (f"; and {len(items) - _SHOW} more" if len(items) > _SHOW else "")
    raise ValueError(f"{len(items)} {what}: {shown}; {fix}")


def _reason(exc: Exception, path: Path) -> str:
    """The cause in an audio error, without the path and libsndfile's repetition of it."""
    text = str(exc).split("; expected")[0].split("; re-copy")[0]
    text = text.removeprefix(f"{path}: ")
    return re.sub(r"\(Error opening '.*?': (.*?)\.?\)", r"(\1)", text)


def _read_journal(path: Path) -> dict[str, dict[str, Any]]:
    """Records by output path; a torn last line (a run killed while appending) is ignored."""
    records: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("out"), str):
            if rec.get("removed"):
                records.pop(rec["out"], None)
            else:
                records[rec["out"]] = rec
    return records


def _channel(data: np.ndarray, mono: str) -> np.ndarray:
    """``(S, C)`` float32 -> ``(S,)``: the mean of the channels, or channel 0 (left) / 1 (right)."""
    if data.shape[1] == 1:
        return data[:, 0]
    if mono == "mean":
        return data.mean(axis=1, dtype=np.float64).astype(np.float32)
    return data[:, 0 if mono == "left" else 1]


def _convert(src: Path, dst: Path, meta: Any, opts: dict[str, Any]) -> tuple[int, bool]:
    """Decode, downmix, resample and write one file; returns (samples written, clipped)."""
    import soundfile

    from speechssl.audio import AudioError, resample, save

    try:
        data, _ = soundfile.read(str(src), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"{src}: cannot decode audio ({exc}); the file is damaged or truncated; remove it "
                         "from SRC or re-encode it") from None
    if data.shape[0] < meta.num_samples:
        raise AudioError(f"{src}: truncated: the header announces {meta.num_samples} samples but only "
                         f"{data.shape[0]} could be decoded; re-copy or re-encode the file, or remove it from SRC")
    if not np.isfinite(data).all():
        raise AudioError(f"{src}: contains NaN or infinite samples; the file is corrupt; remove it from SRC")
    wav = np.ascontiguousarray(_channel(data, opts["mono"]), dtype=np.float32)
    wav = resample(wav, meta.sample_rate, opts["sample_rate"])
    if wav.size == 0:
        raise AudioError(f"{src}: {data.shape[0]} samples at {meta.sample_rate} Hz give no sample at "
                         f"{opts['sample_rate']} Hz; remove it from SRC")
    clipped = bool(np.abs(wav).max() > 1.0) and opts["subtype"] != "FLOAT"
    if clipped:
        wav = np.clip(wav, -1.0, 1.0)
    dst.parent.mkdir(parents=True, exist_ok=True)
    save(dst, wav, opts["sample_rate"], subtype=opts["subtype"])
    return int(wav.shape[0]), clipped


def prepare_audio(src: str | Path, dst: str | Path, *, sample_rate: int = 16000, mono: str = "mean",
                  ext: str | Sequence[str] | None = None, out_format: str = "wav", subtype: str = "PCM_16",
                  valid_percent: float = 0.01, seed: int = 42, path_must_contain: str | None = None,
                  progress: bool = True) -> PrepareSummary:
    """Convert every audio file under ``src`` to ``sample_rate`` mono under ``dst``, then write manifests.

    Args:
        src: folder searched recursively (hidden folders and ``dst``, if inside, are skipped).
        dst: output folder; may not hold audio that an earlier ``prepare_audio`` did not write.
        sample_rate: output rate in Hz (16000: what every speechssl model reads).
        mono: ``"mean"`` (average the channels), ``"left"`` or ``"right"`` (keep one).
        ext: source suffixes (comma-separated or a sequence); default: every common audio
            suffix libsndfile reads here (:func:`speechssl.audio.readable_suffixes`).
        out_format: ``"wav"`` or ``"flac"``.
        subtype: ``"PCM_16"`` (default), ``"PCM_24"`` or ``"FLOAT"``.
        valid_percent, seed: the manifest's train/valid draw (``speechssl manifest``'s semantics).
        path_must_contain: keep only sources whose real path contains this.

    Returns:
        a :class:`PrepareSummary`.

    Raises:
        FileNotFoundError: ``src`` is not a folder, or holds no audio with these suffixes.
        ValueError: bad options; unreadable or empty sources, or two sources for one output
            (all of them named); ``dst`` holds audio of its own.
    """
    from speechssl.atomic import atomic_write_text
    from speechssl.audio import AudioError, info, parse_suffixes, readable_suffixes
    from speechssl.corpus.importers import make_manifest
    from speechssl.fingerprint import changed_fields, file_sha256
    from speechssl.log import progress_bar

    if mono not in MONO_CHOICES:
        raise ValueError(f"--mono must be one of {', '.join(MONO_CHOICES)}, got {mono!r}")
    if out_format not in _OUT_FORMATS:
        raise ValueError(f"--format must be one of {', '.join(_OUT_FORMATS)}, got {out_format!r}")
    if subtype not in _SUBTYPES:
        raise ValueError(f"--subtype must be one of {', '.join(_SUBTYPES)}, got {subtype!r}")
    if sample_rate <= 0:
        raise ValueError(f"--sample-rate must be a positive number of Hz, got {sample_rate}")
    if not 0.0 <= valid_percent <= 1.0:
        raise ValueError(f"--valid-percent is a fraction between 0 and 1, got {valid_percent}")
    src_path, dst_path = Path(os.path.realpath(src)), Path(os.path.realpath(dst))
    if not src_path.is_dir():
        raise FileNotFoundError(f"SRC {src} is not a folder")
    if dst_path == src_path or src_path.is_relative_to(dst_path):
        raise ValueError(f"DST {dst} holds SRC {src}: the outputs would mix with the sources; choose another DST")
    suffixes = parse_suffixes(readable_suffixes() if ext is None else ext)
    out_suffix = "." + out_format
    files, others = _scan(src_path, suffixes, dst_path if dst_path.is_relative_to(src_path) else None,
                          path_must_contain)
    if others:
        _log.info("ignoring %d files with other suffixes (%s); --ext picks the suffixes", sum(others.values()),
                  ", ".join(f"{k}: {v}" for k, v in sorted(others.items())))
    if not files:
        extra = f" containing {path_must_contain!r}" if path_must_contain else ""
        raise FileNotFoundError(f"no {', '.join('*' + s for s in suffixes)} files{extra} under {src_path} "
                                "(--ext picks the suffixes)")

    # 1. every header first: nothing is written if any source is unusable
    outputs: dict[str, Path] = {}
    metas, bad = {}, []
    for path in progress_bar(files, desc="reading headers", unit="file", disable=not progress):
        out_rel = path.relative_to(src_path).with_suffix(out_suffix).as_posix()
        if out_rel in outputs:
            _refuse("sources would write the same output",
                    [f"{outputs[out_rel]} and {path} -> {out_rel}"],
                    "rename one, or keep one suffix with --ext")
        outputs[out_rel] = path
        rel = path.relative_to(src_path).as_posix()
        try:
            meta = info(path)
        except (AudioError, OSError) as exc:
            bad.append(f"{rel} ({_reason(exc, path)})")
            continue
        if meta.num_samples <= 0:
            bad.append(f"{rel} (empty: 0 samples)")
            continue
        metas[out_rel] = meta
    if bad:
        _refuse(f"files under SRC {src_path} cannot be used", bad, "remove or re-encode them, or leave them out with --ext / "
                "--path-must-contain")

    # 2. resume: what an earlier run wrote, and with which options
    opts = _options(sample_rate, mono, out_format, subtype)
    journal_path = dst_path / JOURNAL
    records = _read_journal(journal_path)
    if dst_path.is_dir():
        mine = set(records) | set(outputs)  # an output a killed run wrote before its record is overwritten
        foreign = sorted(p.relative_to(dst_path).as_posix() for p in dst_path.rglob("*")
                         if p.suffix.lower() in set(suffixes) | {out_suffix} and p.is_file()
                         and not p.name.startswith(".") and p.relative_to(dst_path).as_posix() not in mine)
        if foreign:
            _refuse("audio files in DST were not written by `speechssl audio prepare`",
                    [str(dst_path / f) for f in foreign], "choose an empty DST (the manifests index all of DST)")
    old_opts = {json.dumps(r.get("options"), sort_keys=True) for r in records.values()}
    if records and old_opts != {json.dumps(opts, sort_keys=True)}:
        first = next(iter(records.values())).get("options") or {}
        _log.warning("%s: an earlier run used other options (changed: %s); converting again", dst_path,
                     ", ".join(changed_fields(first, opts)))
    dst_path.mkdir(parents=True, exist_ok=True)

    removed = 0
    stale = sorted(set(records) - set(outputs))
    with open(journal_path, "a", encoding="utf-8") as journal:
        for out_rel in stale:  # outputs of an earlier run whose source is gone
            (dst_path / out_rel).unlink(missing_ok=True)
            journal.write(json.dumps({"out": out_rel, "removed": True}) + "\n")
            records.pop(out_rel)
            removed += 1
        if removed:
            _log.info("removed %d outputs whose source is no longer under SRC", removed)

        # 3. convert (the bar shows done/total files, elapsed and ETA)
        converted = reused = downmixed = resampled = clipped = 0
        start = time.monotonic()
        bar = progress_bar(total=len(outputs), desc="converting", unit="file", disable=not progress)
        try:
            for out_rel, path in outputs.items():
                meta = metas[out_rel]
                downmixed += meta.num_channels > 1
                resampled += meta.sample_rate != sample_rate
                sha = file_sha256(path)
                rec = records.get(out_rel)
                out = dst_path / out_rel
                if (rec and rec.get("source_sha256") == sha and rec.get("options") == opts and out.is_file()
                        and _samples(out) == rec.get("num_samples")):
                    reused += 1
                else:
                    n, clip = _convert(path, out, meta, opts)
                    clipped += clip
                    rec = {"out": out_rel, "source": path.relative_to(src_path).as_posix(), "source_sha256": sha,
                           "source_rate": meta.sample_rate, "source_channels": meta.num_channels,
                           "source_subtype": meta.subtype, "num_samples": n, "options": opts}
                    journal.write(json.dumps(rec) + "\n")
                    journal.flush()
                    records[out_rel] = rec
                    converted += 1
                bar.update(1)
        finally:
            bar.close()
    atomic_write_text(journal_path, "".join(json.dumps(records[k]) + "\n" for k in sorted(records)))
    if downmixed:
        _log.info("%d multi-channel files reduced to mono (--mono %s)", downmixed, mono)
    if clipped:
        _log.warning("%d files reached beyond [-1, 1] after resampling and were clipped", clipped)

    # 4. the manifests, as `speechssl manifest DST --dest DST` writes them
    splits = make_manifest(dst_path, dst_path, ext=out_format, valid_percent=valid_percent, seed=seed,
                           sample_rate=sample_rate, progress=False)
    seconds = sum(int(r["num_samples"]) for r in records.values()) / sample_rate
    _log.info("prepared %d files in %s (%d converted, %d reused from an earlier run; %.2f h at %d Hz mono) in "
              "%.0f s; manifests: %s", len(outputs), dst_path, converted, reused, seconds / 3600, sample_rate,
              time.monotonic() - start, ", ".join(f"{k}.tsv {v}" for k, v in splits.items() if v or k == "train"))
    return PrepareSummary(files=len(outputs), converted=converted, reused=reused, removed=removed,
                          downmixed=downmixed, resampled=resampled, clipped=clipped, seconds=seconds, splits=splits)


def _samples(path: Path) -> int | None:
    from speechssl.audio import AudioError, info

    try:
        return info(path).num_samples
    except (AudioError, OSError):
        return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-verb ``prepare``."""
    from speechssl.audio import readable_suffixes

    default_ext = ",".join(x.lstrip(".") for x in readable_suffixes())
    parser.description = ("Audio files in bulk. `prepare` converts a folder of mixed audio (any rate, channels, "
                          "bit depth, wav/flac/ogg/mp3...) into a 16 kHz mono corpus with manifests.")
    sub = parser.add_subparsers(dest="audio_verb", metavar="SUBVERB", required=True)
    p = sub.add_parser(
        "prepare", help="convert a folder of audio to 16 kHz mono files + train.tsv/valid.tsv",
        description="Convert every audio file under SRC (any sample rate, channels and bit depth libsndfile "
                    "reads) to one channel at --sample-rate (soxr, high quality), written to the same "
                    "relative path under DST as .wav (16-bit PCM unless --subtype), then write "
                    "DST/train.tsv and DST/valid.tsv as `speechssl manifest DST --dest DST` does. All headers "
                    "are read first: unreadable or empty files are refused, all named, before anything is "
                    "written. Resumable: a rerun converts only sources whose content (sha256) or options "
                    "changed, and removes outputs whose source is gone.")
    p.add_argument("src", type=Path, metavar="SRC", help="folder searched recursively")
    p.add_argument("dst", type=Path, metavar="DST", help="output folder (a new one, or one this command wrote)")
    p.add_argument("--sample-rate", type=int, default=16000, metavar="HZ",
                   help="output sample rate (default: 16000, what every speechssl model reads)")
    p.add_argument("--mono", choices=MONO_CHOICES, default="mean",
                   help="several channels to one: mean of the channels (default), left (first) or right (second)")
    p.add_argument("--ext", default=default_ext, metavar="EXT[,EXT...]",
                   help=f"source suffixes, comma-separated, case-insensitive (default: {default_ext}: the common "
                        "ones libsndfile reads here)")
    p.add_argument("--format", dest="out_format", choices=_OUT_FORMATS, default="wav", help="output container (default: wav)")
    p.add_argument("--subtype", choices=_SUBTYPES, default="PCM_16", help="output sample encoding (default: PCM_16)")
    p.add_argument("--valid-percent", type=float, default=0.01, metavar="P",
                   help="fraction (0..1) of files for valid.tsv, as in `speechssl manifest`; 0 writes no "
                        "valid.tsv (default: 0.01)")
    p.add_argument("--seed", type=int, default=42, help="seed of the train/valid draw (default: 42)")
    p.add_argument("--path-must-contain", default=None, metavar="FRAG", help="keep only sources whose path contains FRAG")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    if args.audio_verb == "prepare":
        prepare_audio(args.src, args.dst, sample_rate=args.sample_rate, mono=args.mono, ext=args.ext,
                      out_format=args.out_format, subtype=args.subtype, valid_percent=args.valid_percent,
                      seed=args.seed, path_must_contain=args.path_must_contain, progress=not args.no_progress)
        return 0
    raise ValueError(f"unknown audio sub-verb {args.audio_verb!r}")
