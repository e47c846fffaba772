"""``speechssl hub``: list, inspect, export and convert model directories."""
from __future__ import annotations

import argparse
import json
import logging

__all__ = ["add_arguments", "main"]

_log = logging.getLogger(__name__)

_SOURCES = "a model directory, a zoo name, a speechssl training checkpoint (checkpoint_*.pt), " \
           "or a foreign checkpoint some method converts (fairseq HuBERT/wav2vec 2.0 .pt, Hugging Face " \
           "HubertModel/Wav2Vec2Model directory)"
_SUBNET_HELP = ("a supernet's subnet (LightHuBERT: max, min, small, base, or embed=E,heads=H,ffn=R,layers=L "
                "with per-layer heads/ffn joined by ':', fields left out at the search space's largest)")
_FROM_HELP = ("source format: auto (default), speechssl, checkpoint, or a foreign format a registered "
              "method converts (fairseq, hf)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-verbs ``list``, ``info``, ``export``, ``convert``."""
    parser.description = (
        "Model directories hold config.json (method, full config, speechssl version, sha256) and "
        "model.safetensors; loading them never unpickles. The local zoo lives in "
        "$SPEECHSSL_HOME/models (default ~/.cache/speechssl/models); a path always wins over a name.")
    sub = parser.add_subparsers(dest="hub_verb", metavar="SUBVERB", required=True)

    p = sub.add_parser("list", help="list the models of the local zoo",
                       description="List the models in $SPEECHSSL_HOME/models with method, size and version.")
    p.add_argument("--json", action="store_true", help="print one JSON object per model")

    p = sub.add_parser("info", help="show method, sizes, parameter count, downsample rate and hash",
                       description=f"Describe SRC: {_SOURCES}. The weights' sha256 is checked.")
    p.add_argument("src", metavar="SRC", help="what to inspect")
    p.add_argument("--from", dest="src_format", default="auto", metavar="FORMAT", help=_FROM_HELP)
    p.add_argument("--no-verify", action="store_true", help="do not check the sha256 of model.safetensors")
    p.add_argument("--json", action="store_true", help="print the description as one JSON object")
    p.add_argument("--subnet", dest="subnets", action="append", metavar="SPEC",
                   help=_SUBNET_HELP + "; repeat for a table: params and MACs (per --seconds of audio) of each, "
                        "then of the whole supernet (default: the subnet it runs)")
    p.add_argument("--time", dest="time_forward", action="store_true",
                   help="also time one CPU forward of each subnet's standalone model, or of "
                        "the model itself; median of --repeats")
    p.add_argument("--seconds", type=float, default=1.0, metavar="S",
                   help="audio length for the MAC count and the timing (default 1.0)")
    p.add_argument("--repeats", type=int, default=5, metavar="N", help="timed forwards (default 5)")

    p = sub.add_parser("export", help="copy a model directory (or convert a checkpoint) into the zoo",
                       description=f"Put SRC ({_SOURCES}) into the zoo under NAME, so that "
                                   "speechssl.hub.load(NAME) and `speechssl downstream --upstream NAME` find it.")
    p.add_argument("src", metavar="SRC", help="what to export")
    p.add_argument("name", metavar="NAME", help="zoo name: letters, digits, '.', '_', '-'")
    p.add_argument("--from", dest="src_format", default="auto", metavar="FORMAT", help=_FROM_HELP)
    p.add_argument("--force", action="store_true", help="replace an existing zoo model of that name")
    p.add_argument("--no-verify", action="store_true", help="do not check the source's sha256")
    p.add_argument("--subnet", metavar="SPEC", help=_SUBNET_HELP + ": export only that subnet's weights as a "
                                                                   "standalone model")

    p = sub.add_parser("convert", help="convert fairseq / Hugging Face / training checkpoints",
                       description=f"Convert SRC ({_SOURCES}) to DST, a speechssl model directory "
                                   "(--to speechssl) or a directory transformers loads with "
                                   "from_pretrained (--to hf). Weights are checked strictly: missing, "
                                   "unexpected or wrong-shape parameters are an error. .pt files are read "
                                   "with torch.load(weights_only=True) and an allow-list; a file referring "
                                   "to anything else is refused before it runs.")
    p.add_argument("src", metavar="SRC", help="what to convert")
    p.add_argument("dst", metavar="DST", help="output directory (a model directory there is replaced)")
    p.add_argument("--from", dest="src_format", default="auto", metavar="FORMAT", help=_FROM_HELP)
    p.add_argument("--to", dest="target", default="speechssl", metavar="FORMAT",
                   help="output format: speechssl (default) or a foreign format with an exporter (hf)")
    p.add_argument("--no-verify", action="store_true", help="do not check the source's sha256")
    p.add_argument("--subnet", metavar="SPEC", help=_SUBNET_HELP + ": write only that subnet's weights as a "
                                                                   "standalone model")


def _human(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return str(n)


def _print_info(info) -> None:  # noqa: ANN001 - speechssl.hub.ModelInfo, imported lazily
    rows = [("path", str(info.path)), ("format", info.format),
            ("method", info.method + (f" (preset {info.preset})" if info.preset else " (custom config)")),
            ("modality", f"{info.modality} (input: {info.input_kind})")]
    rows.append(("sizes", " ".join(f"{k}={v}" for k, v in info.sizes.items()) or "-"))
    rows.append(("parameters", f"{info.num_parameters:,} ({_human(info.num_parameters)})"))
    rate = info.downsample_rate
    if rate:
        rows.append(("downsample rate", f"{rate} samples/frame ({16000 / rate:g} frames/s at 16 kHz)"))
    sizes = info.hidden_sizes
    same = len(set(sizes)) == 1
    rows.append(("hidden states", f"{len(sizes)} x {sizes[0]}" if same and sizes else str(sizes)))
    if info.sha256:
        rows.append(("sha256", info.sha256 + (" (verified)" if info.verified else " (not checked)")))
    if info.speechssl_version:
        rows.append(("speechssl version", info.speechssl_version))
    if info.source:
        src = info.source
        text = f"{src.get('format', '?')} {src.get('path', '')}".strip()
        if src.get("dropped"):
            text += f"; dropped pretraining-only: {', '.join(src['dropped'])}"
        if text != "?":
            rows.append(("converted from", text))
        if src.get("subnet"):
            rows.append(("subnet of", f"{src.get('supernet', '?')} ({src['subnet']})"))
        if src.get("nonfinite"):
            rows.append(("NOT FINITE", f"{src['nonfinite']}; its outputs will not be finite"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key + ':':<{width + 1}} {value}")
    if info.subnets:
        _print_subnets(info.subnets)


def _print_subnets(table: list[dict]) -> None:
    """The subnet table: name, spec, params, MACs (per the --seconds input), forward time."""
    header = ("name", "subnet", "params", "MACs", "forward")
    lines = [header] + [(r["name"], r["subnet"] or "-", f"{r['params']:,} ({_human(r['params'])})",
                         "-" if r["macs"] is None else _human(r["macs"]),
                         "-" if r["forward_ms"] is None else f"{r['forward_ms']:.1f} ms") for r in table]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    print("subnets:")
    for line in lines:
        print("  " + "  ".join(f"{str(v):<{w}}" for v, w in zip(line, widths)).rstrip())


def main(args: argparse.Namespace) -> int:
    """Run the chosen sub-verb; errors are raised as ValueError/FileNotFoundError/KeyError."""
    from speechssl import hub

    verb = args.hub_verb
    if verb == "list":
        entries = hub.list_models()
        if args.json:
            for e in entries:
                print(json.dumps({"name": e.name, "path": str(e.path), "method": e.method,
                                  "speechssl_version": e.speechssl_version, "size_bytes": e.size_bytes,
                                  "problem": e.problem}))
            return 0
        if not entries:
            print(f"no models in {hub.model_home() / 'models'}; add one with `speechssl hub export SRC NAME`")
            return 0
        width = max(len(e.name) for e in entries)
        for e in entries:
            state = f"  [{e.problem}]" if e.problem else ""
            print(f"{e.name:<{width}}  {e.method or '?':<10} {e.size_bytes / 2**20:8.1f} MiB  "
                  f"speechssl {e.speechssl_version or '?'}{state}")
        return 0
    if verb == "info":
        if args.seconds <= 0 or args.repeats < 1:
            raise ValueError(f"--seconds must be > 0 and --repeats >= 1, got {args.seconds} and {args.repeats}")
        info = hub.info(args.src, verify=not args.no_verify, fmt=args.src_format, subnets=args.subnets,
                        time_forward=args.time_forward, num_samples=int(round(args.seconds * 16000)),
                        repeats=args.repeats)
        if args.json:
            print(json.dumps(info.to_json()))
        else:
            _print_info(info)
        return 0
    if verb == "export":
        dst = hub.export(args.src, args.name, verify=not args.no_verify, overwrite=args.force,
                         fmt=args.src_format, subnet=args.subnet)
        _log.info("exported %s to the zoo as %r (%s)", args.src, args.name, dst)
        print(dst)
        return 0
    if verb == "convert":
        dst = hub.convert(args.src, args.dst, src_format=args.src_format, to=args.target,
                          verify=not args.no_verify, subnet=args.subnet)
        _log.info("converted %s to %s (%s)", args.src, dst, args.target)
        print(dst)
        return 0
    raise ValueError(f"unknown hub sub-verb {verb!r}")
