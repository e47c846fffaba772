"""``speechssl corpus``: synthesize the embedded espeak-ng corpus or the image corpus, or import a real one."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

__all__ = ["add_arguments", "main"]

_SYNTH_HELP = """\
Synthesize the embedded English corpus with espeak-ng: topical read speech (ASR, phone
recognition with 10 ms alignments, speaker ID, speaking style, topics), 1 s keyword clips,
spoken commands with intents and slots, held-out speakers with verification trials, and a
query-by-example set. Files and formats are described in OUT/README.md and corpus.json.
Same preset + seed => byte-identical output, whatever --jobs. Rerunning over a finished
corpus does nothing; an interrupted run resumes where it stopped.

presets: tiny ~10 min (10 + 4 speakers), small ~2.9 h (40 + 10), base ~12 h (100 + 20)

Session variability (on by default) gives every utterance its own small change of pitch,
pitch range and rate and its own channel equaliser, as a real speaker's recordings differ
from session to session (VoxCeleb). --no-session-variability turns it off: then a speaker
sounds the same in every utterance but for the speaking style, and log-mel statistics
identify speakers almost perfectly, which no real corpus allows.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="corpus_cmd", metavar="COMMAND", required=True)

    p = sub.add_parser("synth", help="synthesize the embedded espeak-ng corpus", description=_SYNTH_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("tiny", "small", "base"), default="tiny", help="corpus size (default: tiny)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    p.add_argument("--seed", type=int, default=0, help="random seed of texts, speakers and audio (default: 0)")
    p.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1), metavar="N",
                   help="worker processes (default: min(4, CPUs)); does not change the output")
    p.add_argument("--session-variability", action=argparse.BooleanOptionalAction, default=True,
                   help="vary every utterance's prosody and channel (default: on; see above); recorded in "
                        "corpus.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser(
        "images", help="render the embedded image corpus (scenes, road scenes) and export sklearn's digits",
        description="Render procedural scenes (shapes x colours x textures x sizes x positions x backgrounds, "
                    "several objects per image, with labels for every factor and instance/semantic masks) and "
                    "aerial road scenes (semantic masks), and export scikit-learn's 8 x 8 digits, as PNG files + "
                    "manifests + label files. Nothing is downloaded; same preset + seed => byte-identical output. "
                    "presets: tiny (32 px, CPU seconds), small (64 px). Files: OUT/README.md.")
    p.add_argument("--preset", choices=("tiny", "small"), default="tiny", help="corpus size (default: tiny)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    p.add_argument("--seed", type=int, default=0, help="random seed of every image and of the digits split (default: 0)")
    p.add_argument("--no-digits", action="store_true", help="leave out scikit-learn's digits")

    p = sub.add_parser(
        "import-librispeech", help="manifests + .wrd/.ltr/.spk for a LibriSpeech-layout corpus",
        description="Index a LibriSpeech-layout corpus (ROOT/<subset>/<speaker>/<chapter>/"
                    "<speaker>-<chapter>-<utt>.flac with <speaker>-<chapter>.trans.txt) into "
                    "<split>.tsv manifests and .wrd/.ltr/.spk labels with dict.{ltr,wrd,spk}.txt, the "
                    "formats of the embedded corpus's read/ subset.")
    p.add_argument("root", type=Path, metavar="ROOT", help="folder holding the subset folders (e.g. LibriSpeech/)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    p.add_argument("--subsets", nargs="+", metavar="SUBSET[=SPLIT]",
                   help="subset folders to index, each optionally renamed (dev-clean=valid); "
                        "default: every subset folder found, under its own name")
    p.add_argument("--ext", default="flac", help="audio file extension (default: flac)")

    p = sub.add_parser(
        "import-speech-commands", help="keywords/-style manifests + .kw for a Speech Commands-layout corpus",
        description="Index a Speech Commands-layout corpus (ROOT/<word>/<file>.wav, validation_list.txt, "
                    "testing_list.txt, _background_noise_/) into {train,valid,test}.tsv + .kw/.wrd/.spk with "
                    "the 12 classes of the embedded corpus's keywords/ subset (10 keywords, _unknown_, "
                    "_silence_). 1 s _silence_ clips are cut from _background_noise_ into OUT/_silence_/.")
    p.add_argument("root", type=Path, metavar="ROOT", help="the Speech Commands folder")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    p.add_argument("--silence-clips", type=int, default=None, metavar="N",
                   help="number of 1 s _silence_ clips to cut (default: about as many as one keyword class)")
    p.add_argument("--seed", type=int, default=0, help="seed of the silence crops (default: 0)")


def main(args: argparse.Namespace) -> int:
    if args.corpus_cmd == "synth":
        from speechssl.corpus.synth import synthesize_corpus

        if args.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
        synthesize_corpus(args.out, args.preset, args.seed, jobs=args.jobs, progress=not args.no_progress,
                          sessions=args.session_variability)
        return 0
    if args.corpus_cmd == "images":
        from speechssl.corpus.image import build_image_corpus

        build_image_corpus(args.out, args.preset, args.seed, digits=not args.no_digits)
        return 0
    if args.corpus_cmd == "import-librispeech":
        from speechssl.corpus.importers import import_librispeech

        import_librispeech(args.root, args.out, subsets=args.subsets, ext=args.ext)
        return 0
    if args.corpus_cmd == "import-speech-commands":
        from speechssl.corpus.importers import import_speech_commands

        import_speech_commands(args.root, args.out, silence_clips=args.silence_clips, seed=args.seed)
        return 0
    raise ValueError(f"unknown corpus command {args.corpus_cmd!r}")
