"""Real corpora in the embedded corpus's formats: generic manifests, LibriSpeech, Speech Commands.

- :func:`make_manifest`: fairseq ``examples/wav2vec/wav2vec_manifest.py`` semantics: every
  ``*.<ext>`` under a folder, sent to ``valid.tsv`` with probability ``valid_percent`` (a
  fraction) by ``random.Random(seed)``, else to ``train.tsv``; root line = the folder's real path;
  sizes from the file headers. Unlike fairseq, files are visited in sorted order (so the split
  does not depend on the file system), several suffixes can be indexed at once (default: every
  common one libsndfile reads), and a file that is not mono at the expected sample rate is an
  error that names ``speechssl audio prepare``.
- :func:`import_librispeech`: ``<subset>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac`` with
  ``<spk>-<chapter>.trans.txt`` -> ``<split>.tsv`` + ``.wrd``/``.ltr``/``.spk`` + dictionaries.
- :func:`import_speech_commands`: ``<word>/<file>.wav`` + ``validation_list.txt`` /
  ``testing_list.txt`` + ``_background_noise_/`` -> ``{train,valid,test}.tsv`` + ``.kw`` (the 12
  classes of ``keywords/``), ``.wrd``, ``.spk``; ``_silence_`` clips cut from the noise files.
"""
from __future__ import annotations

import logging
import os
import random
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from speechssl.audio import info as audio_info
from speechssl.audio import load_numpy, parse_suffixes, readable_suffixes, save
from speechssl.corpus.labels import class_dict, letters_of
from speechssl.data.manifest import FormatError, build_dict, write_dict, write_labels, write_manifest
from speechssl.log import progress_bar

__all__ = ["make_manifest", "import_librispeech", "import_speech_commands", "SPEECH_COMMANDS_KEYWORDS"]

_log = logging.getLogger(__name__)

SPEECH_COMMANDS_KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
_UNKNOWN, _SILENCE = "_unknown_", "_silence_"


def _frames(path: Path, sample_rate: int, rate_flag: str = "") -> int:
    """Samples of a mono file at ``sample_rate``; the refusals name the command that fixes them
    (``rate_flag``: the calling verb's own option for another rate, if it has one)."""
    meta = audio_info(path)
    if meta.sample_rate != sample_rate:
        raise ValueError(f"{path}: sample rate is {meta.sample_rate} Hz, expected {sample_rate} Hz; convert the "
                         f"folder with `speechssl audio prepare SRC DST --sample-rate {sample_rate}` and index DST"
                         + (f" (or pass {rate_flag} {meta.sample_rate} to index the files as they are)"
                            if rate_flag else ""))
    if meta.num_channels != 1:
        raise ValueError(f"{path}: has {meta.num_channels} channels, expected mono; convert the folder with "
                         "`speechssl audio prepare SRC DST --mono mean` (or --mono left / --mono right) "
                         "and index DST")
    if meta.num_samples <= 0:
        raise ValueError(f"{path}: empty audio file (0 samples); remove it from the corpus")
    return meta.num_samples


def make_manifest(root: str | Path, dest: str | Path, *, ext: str | Sequence[str] | None = None,
                  valid_percent: float = 0.01, seed: int = 42, path_must_contain: str | None = None,
                  sample_rate: int = 16000, progress: bool = True) -> dict[str, int]:
    """Write ``dest/train.tsv`` (and ``dest/valid.tsv`` if ``valid_percent > 0``).

    Args:
        root: folder searched recursively for ``*.<ext>``.
        dest: output folder.
        ext: file extension(s), with or without the dot, as a sequence or comma-separated
            (``"flac"``, ``"wav,flac"``; matched case-insensitively); default: every common
            audio suffix libsndfile reads here (:func:`speechssl.audio.readable_suffixes`).
        valid_percent: fraction (0..1) of files sent to valid, at random.
        seed: seed of that draw.
        path_must_contain: keep only files whose real path contains this substring.
        sample_rate: every file must have this rate (and one channel).

    Returns:
        rows written per split.
    """
    if not 0.0 <= valid_percent <= 1.0:
        raise ValueError(f"valid_percent is a fraction between 0 and 1 (fairseq semantics), got {valid_percent}")
    dir_path = os.path.realpath(root)
    if not os.path.isdir(dir_path):
        raise FileNotFoundError(f"manifest root is not a directory: {root}")
    suffixes = parse_suffixes(readable_suffixes() if ext is None else ext)
    files = sorted(p for p in Path(dir_path).rglob("*") if p.suffix.lower() in suffixes and p.is_file())
    rand = random.Random(seed)
    rows: dict[str, list[tuple[str, int]]] = {"train": [], "valid": []}
    for fname in progress_bar(files, desc="indexing", unit="file", disable=not progress):
        file_path = os.path.realpath(fname)
        if path_must_contain and path_must_contain not in file_path:
            continue
        frames = _frames(Path(file_path), sample_rate, rate_flag="--sample-rate")
        split = "train" if rand.random() > valid_percent else "valid"
        rows[split].append((os.path.relpath(file_path, dir_path), frames))
    if not rows["train"] and not rows["valid"]:
        extra = f" containing {path_must_contain!r}" if path_must_contain else ""
        raise FileNotFoundError(f"no {', '.join('*' + x for x in suffixes)} files{extra} under {dir_path} "
                                "(--ext picks the suffixes)")
    dest = Path(dest)
    write_manifest(dest / "train.tsv", dir_path, rows["train"])
    if valid_percent > 0:
        write_manifest(dest / "valid.tsv", dir_path, rows["valid"])
    _log.info("%s: %d train, %d valid files", dest, len(rows["train"]), len(rows["valid"]))
    return {k: len(v) for k, v in rows.items()}


# -- LibriSpeech ---------------------------------------------------------------------------------

def _parse_subsets(root: Path, subsets: Sequence[str] | None) -> list[tuple[str, str]]:
    if subsets:
        pairs = []
        for spec in subsets:
            name, _, split = spec.partition("=")
            if not (root / name).is_dir():
                raise FileNotFoundError(f"LibriSpeech subset folder not found: {root / name} (from {spec!r})")
            pairs.append((name, split or name))
        return pairs
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*/*/*.trans.txt")))
    if not found:
        raise FileNotFoundError(f"no LibriSpeech subset under {root}: expected "
                                "<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt")
    return [(name, name) for name in found]


def import_librispeech(root: str | Path, out: str | Path, *, subsets: Sequence[str] | None = None,
                       ext: str = "flac", sample_rate: int = 16000) -> dict[str, int]:
    """Index a LibriSpeech-layout corpus.

    Args:
        root: folder with the subset folders (``train-clean-100``, ``dev-clean``...).
        out: output folder.
        subsets: ``SUBSET`` or ``SUBSET=SPLIT`` entries; subsets mapped to the same split are
            concatenated. Default: every subset found, under its own name.
        ext: audio extension.

    Writes ``<split>.tsv`` (root = the real path of ``root``), ``<split>.wrd`` (the transcript),
    ``<split>.ltr``, ``<split>.spk`` and ``dict.{ltr,wrd,spk}.txt`` (over all imported splits).

    Returns:
        utterances per split.

    Raises:
        FormatError: a malformed transcript line (file and line named).
        FileNotFoundError: a transcript line without audio, or audio without a transcript line.
    """
    root = Path(os.path.realpath(root))
    out = Path(out)
    rows: dict[str, list[tuple[str, int, str, str]]] = defaultdict(list)
    for subset, split in _parse_subsets(root, subsets):
        transcribed: set[Path] = set()
        for trans in sorted((root / subset).glob("*/*/*.trans.txt")):
            for lineno, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                uid, _, text = line.strip().partition(" ")
                parts = uid.split("-")
                if len(parts) != 3 or not text.strip():
                    raise FormatError(f"{trans}:{lineno}: expected '<speaker>-<chapter>-<utt> TRANSCRIPT', got {line!r}")
                audio = trans.parent / f"{uid}.{ext}"
                if not audio.is_file():
                    raise FileNotFoundError(f"{trans}:{lineno}: no audio file {audio} for utterance {uid}")
                transcribed.add(audio)
                words = text.upper().split()
                rows[split].append((str(audio.relative_to(root)), _frames(audio, sample_rate), " ".join(words), parts[0]))
        orphans = sorted(set((root / subset).glob(f"*/*/*.{ext}")) - transcribed)
        if orphans:
            raise FileNotFoundError(f"{len(orphans)} audio file(s) of {root / subset} have no transcript line, "
                                    f"e.g. {orphans[0]}; add them to their .trans.txt or remove them")
        if not transcribed:
            raise FileNotFoundError(f"no transcribed audio in {root / subset}")
    for split, split_rows in rows.items():
        write_labels(out / f"{split}.wrd", (r[2] for r in split_rows))
        write_labels(out / f"{split}.ltr", (letters_of(r[2].split()) for r in split_rows))
        write_labels(out / f"{split}.spk", (r[3] for r in split_rows))
    all_rows = [r for split_rows in rows.values() for r in split_rows]
    write_dict(out / "dict.ltr.txt", build_dict((letters_of(r[2].split()) for r in all_rows), sort="count"))
    write_dict(out / "dict.wrd.txt", build_dict((r[2] for r in all_rows), sort="count"))
    write_dict(out / "dict.spk.txt", class_dict(r[3] for r in all_rows))
    for split, split_rows in rows.items():  # manifests last
        write_manifest(out / f"{split}.tsv", root, ((r[0], r[1]) for r in split_rows))
    _log.info("imported %s into %s", ", ".join(f"{s}: {len(r)}" for s, r in rows.items()), out)
    return {s: len(r) for s, r in rows.items()}


# -- Speech Commands -----------------------------------------------------------------------------

def _read_list(path: Path) -> set[str]:
    if not path.is_file():
        raise FileNotFoundError(f"Speech Commands split list not found: {path}")
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def import_speech_commands(root: str | Path, out: str | Path, *, silence_clips: int | None = None,
                           seed: int = 0, sample_rate: int = 16000) -> dict[str, int]:
    """Index a Speech Commands-layout corpus into the ``keywords/`` formats.

    Files listed in ``validation_list.txt`` go to valid, in ``testing_list.txt`` to test, the
    rest to train. The class is the word folder if it is one of the 10 keywords, else
    ``_unknown_``; the speaker is the file name before ``_nohash_``. ``silence_clips`` 1 s
    crops of the ``_background_noise_`` files (from the first 80 % of each file for train,
    the next 10 % for valid, the last 10 % for test) are written to ``out/_silence_/`` with
    class ``_silence_``. The manifests' root is the deepest folder holding both ``root`` and
    ``out``. Clips shorter than 1 s are kept as they are (pad them when loading).

    Returns:
        clips per split.
    """
    root = Path(os.path.realpath(root))
    out = Path(out)
    valid, test = _read_list(root / "validation_list.txt"), _read_list(root / "testing_list.txt")
    clips: dict[str, list[tuple[Path, int, str, str, str]]] = {"train": [], "valid": [], "test": []}
    words = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))
    if not words:
        raise FileNotFoundError(f"no word folders in {root}: expected <word>/<file>.wav")
    for word in words:
        for wav in sorted((root / word).glob("*.wav")):
            rel = f"{word}/{wav.name}"
            split = "valid" if rel in valid else "test" if rel in test else "train"
            label = word if word in SPEECH_COMMANDS_KEYWORDS else _UNKNOWN
            speaker = wav.stem.split("_nohash_")[0]
            clips[split].append((wav, _frames(wav, sample_rate), label, word.upper(), speaker))
    listed = {c[0].relative_to(root).as_posix() for rows in clips.values() for c in rows}
    missing = sorted((valid | test) - listed)
    if missing:
        raise FileNotFoundError(f"{len(missing)} file(s) named in the split lists do not exist, e.g. {root / missing[0]}")

    noise_dir = root / "_background_noise_"
    if silence_clips is None:
        n_kw = sum(1 for rows in clips.values() for c in rows if c[2] != _UNKNOWN)
        silence_clips = max(1, n_kw // len(SPEECH_COMMANDS_KEYWORDS)) if noise_dir.is_dir() else 0
    if silence_clips > 0:
        if not noise_dir.is_dir():
            raise FileNotFoundError(f"--silence-clips {silence_clips} asked for but {noise_dir} does not exist")
        for split, path, n in _cut_silence(noise_dir, out / _SILENCE, silence_clips, seed, sample_rate):
            clips[split].append((path, n, _SILENCE, "", "none"))
    elif not noise_dir.is_dir():
        _log.warning("%s has no _background_noise_ folder: the _silence_ class will be empty", root)

    base = Path(os.path.commonpath([root, os.path.realpath(out)]))
    for split, rows in clips.items():
        write_labels(out / f"{split}.kw", (c[2] for c in rows))
        write_labels(out / f"{split}.wrd", (c[3] for c in rows))
        write_labels(out / f"{split}.spk", (c[4] for c in rows))
    all_rows = [c for rows in clips.values() for c in rows]
    write_dict(out / "dict.kw.txt", class_dict((c[2] for c in all_rows), list(SPEECH_COMMANDS_KEYWORDS) + [_UNKNOWN, _SILENCE]))
    write_dict(out / "dict.spk.txt", class_dict(c[4] for c in all_rows))
    for split, rows in clips.items():
        write_manifest(out / f"{split}.tsv", base, ((os.path.relpath(c[0], base), c[1]) for c in rows))
    _log.info("imported Speech Commands into %s: %s", out, ", ".join(f"{s}: {len(r)}" for s, r in clips.items()))
    return {s: len(r) for s, r in clips.items()}


def _cut_silence(noise_dir: Path, dest: Path, count: int, seed: int, sample_rate: int
                 ) -> list[tuple[str, Path, int]]:
    files = sorted(noise_dir.glob("*.wav"))
    if not files:
        raise FileNotFoundError(f"no .wav files in {noise_dir}")
    noises = [load_numpy(f, sample_rate) for f in files]
    usable = [(f, x) for f, x in zip(files, noises) if x.shape[0] >= 10 * sample_rate]
    if not usable:
        raise ValueError(f"the noise files of {noise_dir} are all shorter than 10 s; cannot cut 1 s clips "
                         "for train, valid and test without overlap")
    rng = np.random.default_rng([seed, 0x51C])
    n_valid = n_test = max(1, round(0.1 * count))
    n_train = max(1, count - n_valid - n_test)
    out = []
    bounds = {"train": (0.0, 0.8), "valid": (0.8, 0.9), "test": (0.9, 1.0)}
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        lo_f, hi_f = bounds[split]
        for i in range(n):
            _, x = usable[int(rng.integers(len(usable)))]
            lo, hi = int(lo_f * x.shape[0]), int(hi_f * x.shape[0]) - sample_rate
            start = int(rng.integers(lo, max(lo, hi) + 1))
            clip = np.clip(x[start:start + sample_rate], -1.0, 1.0)
            path = dest / f"{split}_{i:05d}.wav"
            save(path, clip, sample_rate)
            out.append((split, path, sample_rate))
    return out

