"""``speechssl manifest``: ``train.tsv``/``valid.tsv`` for a folder of audio files (fairseq semantics)."""
from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Index every *.EXT file under DIR into DEST/train.tsv and DEST/valid.tsv, like fairseq's "
        "examples/wav2vec/wav2vec_manifest.py: first line the real path of DIR, then "
        "'relative/path<TAB>num_samples'; each file goes to valid with probability --valid-percent "
        "(a fraction, drawn with --seed). Files are visited in sorted order; every file must be mono "
        "at --sample-rate (default 16000): for other rates or stereo, convert the folder first with "
        "`speechssl audio prepare SRC DST` (16 kHz mono, and it writes these manifests too).")
    parser.add_argument("root", type=Path, metavar="DIR", help="folder searched recursively")
    parser.add_argument("--dest", type=Path, default=Path("."), metavar="OUT", help="output folder (default: .)")
    from speechssl.audio import readable_suffixes

    default_ext = ",".join(x.lstrip(".") for x in readable_suffixes())
    parser.add_argument("--ext", default=default_ext, metavar="EXT[,EXT...]",
                        help=f"audio file extension(s), comma-separated, case-insensitive (default: {default_ext}: "
                             "the common ones libsndfile reads here)")
    parser.add_argument("--valid-percent", type=float, default=0.01, metavar="P",
                        help="fraction (0..1) of files for valid.tsv; 0 writes no valid.tsv (default: 0.01)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the train/valid draw (default: 42)")
    parser.add_argument("--path-must-contain", default=None, metavar="FRAG",
                        help="keep only files whose path contains FRAG")
    parser.add_argument("--sample-rate", type=int, default=16000,
                        help="required sample rate in Hz (default: 16000, what every speechssl model reads)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from speechssl.corpus.importers import make_manifest

    make_manifest(args.root, args.dest, ext=args.ext, valid_percent=args.valid_percent, seed=args.seed,
                  path_must_contain=args.path_must_contain, sample_rate=args.sample_rate,
                  progress=not args.no_progress)
    return 0
