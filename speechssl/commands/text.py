"""``speechssl text``: the text side of speech + text methods (SpeechT5).

* ``speechssl text unpaired CORPUS --out DIR``: unpaired text of a corpus, evaluation text kept
  out (:mod:`speechssl.corpus.unpaired`) → ``DIR/train.txt``, ``DIR/valid.txt``, ``DIR/unpaired.json``.
* ``speechssl text spm-train --out M.model --vocab-size N (--text FILE... | --corpus DIR)``: a
  sentencepiece model (ids unk 0, bos 1, eos 2, pad 3, then the user-defined pieces, ``<mask>``
  by default) trained on one thread, so the same text and options give the same bytes; written
  atomically (:func:`speechssl.data.text.train_sentencepiece_lines`).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

__all__ = ["add_arguments", "main"]

_log = logging.getLogger(__name__)


def _add_unpaired_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--subset", default="read",
                   help="subset folder whose train.wrd gives the spoken sentences (default: read; '' for a "
                        "corpus with train.wrd at its top level)")
    p.add_argument("--extra", type=int, default=2000, metavar="N",
                   help="sentences no voice of the corpus spoke, added to the training text (default: 2000)")
    p.add_argument("--text-seed", type=int, default=0, metavar="S",
                   help="varies the unspoken sentences for the same corpus (default: 0)")
    p.add_argument("--exclude", type=Path, nargs="+", default=[], metavar="DIR",
                   help="other corpora whose evaluation text stays out too (e.g. the evaluation corpus)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="text_cmd", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "unpaired", help="unpaired text of a corpus (train/valid), evaluation text kept out",
        description="Write the unpaired text of a corpus for joint speech + text pretraining: the "
                    "transcripts of <subset>/train.wrd plus --extra sentences that no voice of the corpus "
                    "spoke (drawn from the corpus's topic grammars), and --valid more unspoken sentences. "
                    "Every row of a .wrd file other than train.wrd (valid/test splits, verification, QbE) is "
                    "evaluation text and never appears, neither whole nor as part of a longer sentence. "
                    "Lines are in the .wrd form (upper-case words). The corpus folder is not changed.")
    p.add_argument("corpus", type=Path, metavar="CORPUS", help="corpus folder (speechssl corpus synth --out)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="output folder: train.txt, valid.txt, unpaired.json")
    _add_unpaired_options(p)
    p.add_argument("--valid", type=int, default=200, metavar="N", help="unspoken sentences of valid.txt (default: 200)")

    p = sub.add_parser(
        "spm-train", help="train a sentencepiece model on text files or a corpus's unpaired text",
        description="Train a sentencepiece model on the non-blank lines of --text files (in order), or on "
                    "the unpaired training text of --corpus (as 'speechssl text unpaired' makes it). Ids: unk 0, "
                    "bos 1, eos 2, pad 3, then the --user-symbols pieces. One training thread: the same text "
                    "and options give the same model bytes. The model is written atomically.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", type=Path, nargs="+", metavar="FILE", help="UTF-8 text files, one sentence a line")
    src.add_argument("--corpus", type=Path, metavar="DIR", help="corpus folder: train on its unpaired text")
    p.add_argument("--out", required=True, type=Path, metavar="MODEL", help="the .model file to write")
    p.add_argument("--vocab-size", type=int, default=256, metavar="N",
                   help="pieces, specials and user symbols included (default: 256)")
    p.add_argument("--model-type", choices=("unigram", "bpe", "char", "word"), default="unigram",
                   help="sentencepiece model type (default: unigram)")
    p.add_argument("--character-coverage", type=float, default=1.0, metavar="F",
                   help="share of characters the vocabulary covers (default: 1.0)")
    p.add_argument("--user-symbols", nargs="*", default=["<mask>"], metavar="PIECE",
                   help="pieces always in the vocabulary (default: <mask>, which SpeechT5's text denoising needs)")
    p.add_argument("--max-sentences", type=int, default=0, metavar="N", help="train on the first N lines (0: all)")
    _add_unpaired_options(p)


def main(args: argparse.Namespace) -> int:
    from speechssl.corpus.unpaired import unpaired_text, write_unpaired_text

    if args.text_cmd == "unpaired":
        write_unpaired_text(args.corpus, args.out, subset=args.subset, extra=args.extra, valid=args.valid,
                            seed=args.text_seed, exclude=args.exclude)
        _log.info("wrote %s/train.txt, valid.txt, unpaired.json", args.out)
        return 0
    if args.text_cmd == "spm-train":
        from speechssl.data.text import read_lines, train_sentencepiece_lines

        if args.max_sentences < 0:
            raise ValueError(f"--max-sentences must be >= 0, got {args.max_sentences}")
        if args.corpus is not None:
            lines = unpaired_text(args.corpus, subset=args.subset, extra=args.extra, valid=0,
                                  seed=args.text_seed, exclude=args.exclude).train
            source = f"{args.corpus} (unpaired text)"
        else:
            lines = []
            for path in args.text:
                if not path.is_file():
                    raise FileNotFoundError(f"--text: no such file: {path}")
                lines += read_lines(path)
            source = ", ".join(str(p) for p in args.text)
        train_sentencepiece_lines(lines, args.out, args.vocab_size, model_type=args.model_type,
                                  character_coverage=args.character_coverage,
                                  user_defined_symbols=args.user_symbols, max_sentences=args.max_sentences,
                                  source=source)
        return 0
    raise ValueError(f"unknown text command {args.text_cmd!r}")
