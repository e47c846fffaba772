"""The ``speechssl`` command.

Each verb lives in its own module under ``speechssl.commands`` that defines
``add_arguments(parser)`` and ``main(args) -> int``; it is imported only when that verb runs
(or its ``--help`` is asked for), so ``speechssl --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from speechssl.log import setup_logging
from speechssl.version import __version__

# verb -> (module under speechssl.commands, one-line help); a verb's sub-verbs are named in its help
# in `backquotes`, all of them and nothing else (tests/commands/test_help.py checks both ways)
_VERBS: dict[str, tuple[str, str]] = {
    "corpus": ("corpus", "`synth` the embedded espeak-ng corpus, render the `images` corpus, or index a real one "
                         "(`import-librispeech`, `import-speech-commands`)"),
    "audio": ("audio", "`prepare`: convert a folder of audio (any rate, channels, bit depth) to 16 kHz mono "
                       "files + manifests"),
    "manifest": ("manifest", "write train.tsv/valid.tsv manifests for a folder of 16 kHz mono audio files"),
    "features": ("features", "`dump` fbank/MFCC/spectrogram features or a model's hidden layer for a manifest "
                             "split; CMVN `stats`"),
    "kmeans": ("kmeans", "`fit` a k-means model on dumped features; `info` on a fitted one"),
    "dump-labels": ("dump_labels", "assign k-means units to every frame: <split>.km + dict.km.txt"),
    "cluster": ("cluster", "label quality `metrics` (purity, PNMI), `lda` topics over units and their "
                           "`topic-metrics`"),
    "pretrain": ("pretrain", "pretrain an upstream model with the shared Trainer"),
    "downstream": ("downstream", "SUPERB-style training and evaluation of frozen upstreams; `report`, `tasks`"),
    "hub": ("hub", "model directories and the local zoo: `list`, `info`, `export`, `convert`"),
    "text": ("text", "`unpaired` text of a corpus and `spm-train` sentencepiece models (speech + text methods)"),
    "speecht5": ("speecht5", "fine-tune SpeechT5 through its decoder: `asr` (speech -> text, WER/CER), "
                             "`tts` (text -> log-mel)"),
    "bench": ("bench", "run a benchmark from tools/bench and print its JSON line"),
    "aug-complexity": ("aug_complexity", "augmentation kernel spectrum and complexity of image augmentations on a "
                                         "manifest; predicts which gives the better linear probe"),
}

_log = logging.getLogger(__name__)


def _build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speechssl",
        description="Self-supervised speech representation learning: corpus, features, "
                    "pseudo-labels, pretraining, downstream evaluation and the model hub.",
        epilog="Run 'speechssl VERB --help' for the options of a verb.",
    )
    parser.add_argument("--version", action="version", version=f"speechssl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    verb = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in _VERBS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == verb:  # import only the module of the verb being run
            mod = importlib.import_module(f"speechssl.commands.{module}")
            mod.add_arguments(p)
            p.set_defaults(_main=mod.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``speechssl`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser(argv)
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    setup_logging(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        _log.error("interrupted")
        return 130
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as exc:
        # User-facing errors carry their own explanation; a traceback adds nothing.
        if args.verbose:
            raise
        _log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
