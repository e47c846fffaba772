"""``speechssl cluster``: label quality metrics of k-means units.

    speechssl cluster metrics --km LAB_DIR/valid.km --label-rate 50 \\
        --phn-ali CORPUS/read/valid.phn_ali --ali-rate 100 [--out table.json]

Several label sets can be scored in one table (e.g. HuBERT iterations 1 and 2):
``--km it1/valid.km it2/valid.km --label-rate 100 50 --name iter1 iter2``.

``speechssl cluster lda`` and ``speechssl cluster topic-metrics`` (utterance topics over units,
HuBERTopic) live in :mod:`speechssl.commands.cluster_topics`.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

_log = logging.getLogger(__name__)

_COLUMNS = [("phone_purity", "phn pur", ".4f"), ("cluster_purity", "cls pur", ".4f"), ("pnmi", "PNMI", ".4f"),
            ("phone_entropy", "H(phn)", ".3f"), ("unit_entropy", "H(unit)", ".3f"), ("mutual_info", "MI", ".3f"),
            ("n_units", "units", "d"), ("n_phones", "phones", "d"), ("n_frames", "frames", "d"),
            ("n_rows", "rows", "d"), ("max_frame_diff", "max diff", ".1f")]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="cluster_cmd", metavar="CMD", required=True)
    m = sub.add_parser(
        "metrics", help="phone purity, cluster purity and PNMI of .km labels against a phone alignment",
        description="Score unit labels against frame-level phone alignments as in the HuBERT paper (section "
                    "IV-C): phone purity (units mapped to their most frequent phone), cluster purity (phones "
                    "mapped to their most frequent unit) and PNMI = I(phone; unit) / H(phone). The alignment "
                    "is resampled to the label rate (each label frame takes the phone of the alignment frame "
                    "with the same centre: both use 25 ms snip-edges frames, frame t starting at t/rate s). "
                    "Prints a table; --out also writes it as JSON "
                    '{"phn_ali": ..., "ali_rate": ..., "results": [{"name", "km", "label_rate", metrics...}]}, '
                    "--markdown as a markdown table.")
    m.add_argument("--km", type=Path, nargs="+", required=True,
                   help="label file(s) <split>.km, one row per manifest row")
    m.add_argument("--label-rate", type=float, nargs="+", required=True,
                   help="frame rate of the labels in Hz (100 for MFCC, 50 for HuBERT layers); one value for all "
                        "--km files or one per file")
    m.add_argument("--phn-ali", type=Path, required=True, help="phone alignment <split>.phn_ali of the same rows")
    m.add_argument("--ali-rate", type=float, default=100.0, help="frame rate of the alignment in Hz (default 100)")
    m.add_argument("--name", nargs="+", default=None, help="row names for the table (default: the --km paths)")
    m.add_argument("--tolerance-s", type=float, default=0.05,
                   help="largest allowed duration difference of a row between labels and alignment, in "
                        "seconds (default 0.05)")
    m.add_argument("--out", type=Path, default=None, help="also write the table as JSON here")
    m.add_argument("--markdown", type=Path, default=None, help="also write the table as markdown here")
    from speechssl.commands import cluster_topics

    cluster_topics.add_subcommands(sub)


def _format_table(results: list[dict]) -> str:
    header = ["labels"] + [title for _, title, _ in _COLUMNS]
    body = []
    for r in results:
        cells = [str(r["name"])]
        for key, _, fmt in _COLUMNS:
            v = r[key]
            cells.append("nan" if isinstance(v, float) and math.isnan(v) else format(v, fmt))
        body.append(cells)
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in [header] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _format_markdown(results: list[dict], phn_ali: Path) -> str:
    """The table as markdown: one row per label set, the main metrics first."""
    lines = [f"Label quality against `{phn_ali}` (PNMI = I(phone; unit) / H(phone)).", "",
             "| labels | rate (Hz) | units | phone purity | cluster purity | PNMI | frames |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['label_rate']:g} | {r['n_units']} | {r['phone_purity']:.4f} | "
                     f"{r['cluster_purity']:.4f} | {r['pnmi']:.4f} | {r['n_frames']} |")
    return "\n".join(lines) + "\n"


def _metrics(args: argparse.Namespace) -> int:
    from speechssl.atomic import atomic_write_text
    from speechssl.cluster.metrics import evaluate_label_file

    rates = args.label_rate
    if len(rates) == 1:
        rates = rates * len(args.km)
    if len(rates) != len(args.km):
        raise ValueError(f"got {len(args.km)} --km files but {len(args.label_rate)} --label-rate values; "
                         "give one rate for all or one per file")
    names = args.name or [str(p) for p in args.km]
    if len(names) != len(args.km):
        raise ValueError(f"got {len(args.km)} --km files but {len(names)} --name values")
    results = []
    for name, km, rate in zip(names, args.km, rates):
        r = evaluate_label_file(km, args.phn_ali, label_rate=rate, ali_rate=args.ali_rate,
                                tolerance_s=args.tolerance_s)
        _log.info("%s: phone purity %.4f, cluster purity %.4f, PNMI %.4f", name, r["phone_purity"],
                  r["cluster_purity"], r["pnmi"])
        results.append({"name": name, "km": str(km), "label_rate": rate, **r})
    print(_format_table(results))
    if args.out is not None:
        table = {"phn_ali": str(args.phn_ali), "ali_rate": args.ali_rate, "results": results}
        atomic_write_text(args.out, json.dumps(table, indent=2) + "\n")
        _log.info("wrote %s", args.out)
    if args.markdown is not None:
        atomic_write_text(args.markdown, _format_markdown(results, args.phn_ali))
        _log.info("wrote %s", args.markdown)
    return 0


def main(args: argparse.Namespace) -> int:
    if args.cluster_cmd == "metrics":
        return _metrics(args)
    from speechssl.commands import cluster_topics

    status = cluster_topics.main(args)
    if status is not None:
        return status
    raise ValueError(f"unknown cluster command {args.cluster_cmd!r}")
