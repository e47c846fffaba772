"""``speechssl cluster lda`` and ``speechssl cluster topic-metrics`` (HuBERTopic's topic labels).

    speechssl cluster lda --labels LAB_DIR --splits train valid test --num-topics 8 \\
        [--manifest-dir DATA] [--ngram 2] [--merge-repeats] [--out LAB_DIR]
    speechssl cluster topic-metrics --topic LAB_DIR/valid.topic --manifest DATA/valid.tsv \\
        --corpus CORPUS [--ref spk=DATA/valid.spk ...] [--out table.json] [--markdown table.md]
"""
from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

_log = logging.getLogger(__name__)


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Add ``lda`` and ``topic-metrics`` to the ``speechssl cluster`` subcommands."""
    p = sub.add_parser(
        "lda", help="LDA topics over unit sequences: <split>.topic (+ distributions) and a safetensors model",
        description="Fit gensim's LdaModel on the bag-of-units documents of the fit split (each row of "
                    "<split>.<label> is a document, unit ids the words, optionally unit n-grams), then write "
                    "for every split <split>.topic (the most probable topic of each row), "
                    "<split>.topic_dist.npy ((N, K) topic distributions), dict.topic.txt, lda.safetensors "
                    "(topic-word matrix, priors, vocabulary; no pickle) and lda.json (fingerprints). A rerun "
                    "with the same inputs and options skips what is done.")
    p.add_argument("--labels", type=Path, required=True, help="directory with <split>.<label> unit files")
    p.add_argument("--splits", nargs="+", default=["train", "valid"], help="splits to label (default: train valid)")
    p.add_argument("--fit-split", default="train", help="split the model is fitted on (default: train)")
    p.add_argument("--label", default="km", help="extension of the unit files (default: km)")
    p.add_argument("--topic-label", default="topic", help="extension of the topic files (default: topic)")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: --labels)")
    p.add_argument("--manifest-dir", type=Path, default=None,
                   help="check that every label file has as many rows as <split>.tsv here")
    p.add_argument("--num-topics", "-k", type=int, default=8, help="K topics (default: 8)")
    p.add_argument("--ngram", type=int, default=1, help="unit n-grams of orders 1..N are words (default: 1)")
    p.add_argument("--merge-repeats", action="store_true", help="collapse runs of one unit before counting")
    p.add_argument("--passes", type=int, default=10, help="passes over the fit split (default: 10)")
    p.add_argument("--iterations", type=int, default=50, help="E-step iterations per document (default: 50)")
    p.add_argument("--chunksize", type=int, default=2000, help="documents per online update (default: 2000)")
    p.add_argument("--alpha", default="symmetric", help="document-topic prior: symmetric, asymmetric, auto or a number")
    p.add_argument("--eta", default="symmetric", help="topic-word prior: symmetric, auto or a number")
    p.add_argument("--seed", type=int, default=0, help="gensim random_state (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="refit even if --out holds results of these inputs (other inputs always refit)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    m = sub.add_parser(
        "topic-metrics", help="NMI and purity of utterance topics against theme, speaker, gender, voice, style",
        description="Score a <split>.topic file against reference utterance labels: NMI (arithmetic, as "
                    "sklearn's normalized_mutual_info_score), purity (topics mapped to their majority class) and "
                    "inverse purity. References: --corpus (the embedded corpus: text topic, speaker, gender, "
                    "voice, style, matched to --manifest rows by audio path) and/or --ref NAME=FILE label files "
                    "with one row per topic row. Rows without a reference value are skipped for it.")
    m.add_argument("--topic", type=Path, required=True, help="topic file <split>.topic")
    m.add_argument("--manifest", type=Path, default=None, help="manifest of the topic rows (needed with --corpus)")
    m.add_argument("--corpus", type=Path, default=None, help="embedded corpus directory (speakers.json, subsets)")
    m.add_argument("--ref", nargs="+", default=[], metavar="NAME=FILE", help="reference label files")
    m.add_argument("--name", default=None, help="name of the topic labels in the table (default: the path)")
    m.add_argument("--out", type=Path, default=None, help="also write the table as JSON here")
    m.add_argument("--markdown", type=Path, default=None, help="also write the table as markdown here")


def _lda(args: argparse.Namespace) -> int:
    from speechssl.cluster.lda import LdaOptions, parse_prior, run_lda

    options = LdaOptions(num_topics=args.num_topics, ngram=args.ngram, merge_repeats=args.merge_repeats,
                         passes=args.passes, iterations=args.iterations, chunksize=args.chunksize,
                         alpha=parse_prior(args.alpha), eta=parse_prior(args.eta), seed=args.seed)
    state = run_lda(args.labels, args.out or args.labels, args.splits, fit_split=args.fit_split, label=args.label,
                    topic_label=args.topic_label, options=options, manifest_dir=args.manifest_dir,
                    overwrite=args.overwrite, progress=not args.no_progress)
    for split, info in state["splits"].items():
        print(f"{split}: {info['rows']} rows, {info['topics_used']}/{options.num_topics} topics used")
    return 0


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def _topic_metrics(args: argparse.Namespace) -> int:
    from speechssl.atomic import atomic_write_text
    from speechssl.cluster.topic_metrics import corpus_references, evaluate_topics, read_topics
    from speechssl.data.manifest import read_labels, validate_manifest

    # every user file checked before any scoring: the manifest (root line, rows, files), the
    # topic file (one id per row, as many rows as the manifest), each --ref's row count
    # (no audio is read: the rows are matched by path, so the files need not exist here)
    manifest = validate_manifest(args.manifest, check_files=False) if args.manifest is not None else None
    topics = read_topics(args.topic, expected_rows=len(manifest) if manifest is not None else None)
    refs: dict[str, list] = {}
    if args.corpus is not None:
        if manifest is None:
            raise ValueError("--corpus needs --manifest (the manifest whose rows the topic file follows)")
        refs.update(corpus_references(args.corpus, manifest))
    for spec in args.ref:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--ref takes NAME=FILE, got {spec!r}")
        refs[name] = list(read_labels(path, expected_rows=len(topics)))
    if not refs:
        raise ValueError("nothing to score against: give --corpus (with --manifest) or --ref NAME=FILE")
    results = evaluate_topics(args.topic, refs)
    name = args.name or str(args.topic)
    cols = ["reference", "nmi", "purity", "inverse_purity", "n_rows", "n_classes", "n_topics"]
    table = [cols] + [[_fmt(r.get(c, "")) for c in cols] for r in results]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    print(f"topics: {name}")
    for row in table:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
    if args.out is not None:
        atomic_write_text(args.out, json.dumps({"name": name, "topic": str(args.topic), "results": results},
                                               indent=2) + "\n")
        _log.info("wrote %s", args.out)
    if args.markdown is not None:
        lines = [f"Topic labels `{name}` against utterance labels (NMI: arithmetic normalisation).", "",
                 "| reference | NMI | purity | inverse purity | rows | classes | topics |",
                 "|---|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['reference']} | {_fmt(r['nmi'])} | {_fmt(r['purity'])} | {_fmt(r['inverse_purity'])} | "
                  f"{r['n_rows']} | {r.get('n_classes', '')} | {r.get('n_topics', '')} |" for r in results]
        atomic_write_text(args.markdown, "\n".join(lines) + "\n")
        _log.info("wrote %s", args.markdown)
    return 0


def main(args: argparse.Namespace) -> int | None:
    """Run ``lda`` / ``topic-metrics``; None for another subcommand."""
    if args.cluster_cmd == "lda":
        return _lda(args)
    if args.cluster_cmd == "topic-metrics":
        return _topic_metrics(args)
    return None
