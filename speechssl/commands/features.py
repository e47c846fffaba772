"""``speechssl features``: dump features of a manifest split, and global CMVN statistics.

    speechssl features dump --manifest-dir DIR --split train --out FEAT_DIR --feature mfcc39
    speechssl features dump ... --feature upstream --upstream MODEL_DIR --layer 6 --shard 0 --nshard 4
    speechssl features stats --feat-dir FEAT_DIR --split train --nshard 4 --out cmvn.npy
"""
from __future__ import annotations

import argparse
import inspect
import logging
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)

_FEATURES = ("fbank", "mfcc", "mfcc39", "spectrogram", "upstream")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    dump = sub.add_parser(
        "dump", help="write Kaldi features or a model's hidden layer of a manifest split as "
                     "<split>_<shard>_<nshard>.npy/.len",
        description="Compute features for one shard of <manifest-dir>/<split>.tsv and write fairseq's "
                    "HuBERT layout: <out>/<split>_<shard>_<nshard>.npy (float32 (frames, D), memory-"
                    "mappable) + .len (frames per utterance) + .json (how they were made). Resumable: "
                    "rerun the same command after an interruption and it continues; a complete "
                    "shard is skipped.")
    dump.add_argument("--manifest-dir", type=Path, required=True, help="directory holding <split>.tsv")
    dump.add_argument("--split", required=True, help="manifest split, e.g. train")
    dump.add_argument("--out", type=Path, required=True, help="feature directory to write")
    dump.add_argument("--feature", choices=_FEATURES, default="mfcc39",
                      help="mfcc39: 13 MFCC + deltas + delta-deltas = 39 dims (HuBERT iteration 1); fbank: 80 "
                           "log mel bins (80 dims here; the downstream baseline `-u fbank` appends deltas and "
                           "delta-deltas: 240 dims); mfcc: 13 Kaldi MFCCs; spectrogram: Kaldi log power "
                           "spectrum, 257 dims; upstream: a hidden layer of a model (--upstream, --layer). "
                           "Default: mfcc39")
    dump.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                      help="Kaldi feature option, repeatable (e.g. --opt num_mel_bins=40 --opt snip_edges=false)")
    dump.add_argument("--upstream", help="model directory, checkpoint or zoo name (with --feature upstream)")
    dump.add_argument("--layer", type=int, help="hidden state index of the upstream (0 = before the first "
                                                "transformer layer)")
    dump.add_argument("--max-chunk", type=int, default=1_600_000,
                      help="most samples per upstream forward pass; longer audio is processed in chunks "
                           "(default: 1600000, 100 s)")
    dump.add_argument("--fp16", action="store_true",
                      help="run the upstream under autocast (float16 on GPU, bfloat16 on CPU); "
                           "features are stored as float32")
    dump.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    dump.add_argument("--shard", type=int, default=0, help="which shard to compute, 0-based (default: 0)")
    dump.add_argument("--nshard", type=int, default=1, help="number of shards the split is cut into (default: 1)")
    dump.add_argument("--resample", action="store_true", help="resample audio of other rates to 16 kHz")
    dump.add_argument("--overwrite", action="store_true", help="recompute a shard that is already complete")
    dump.add_argument("--checkpoint-interval", type=float, default=30.0,
                      help="seconds between progress markers a rerun resumes from (default: 30)")
    dump.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    stats = sub.add_parser(
        "stats", help="global CMVN statistics of dumped features",
        description="Accumulate Kaldi-layout CMVN statistics (a (2, D+1) float64 .npy: sums and frame "
                    "count, sums of squares) over all shards of dumped features.")
    stats.add_argument("--feat-dir", type=Path, required=True, help="directory written by `features dump`")
    stats.add_argument("--split", required=True, help="split name of the dumped files")
    stats.add_argument("--nshard", type=int, default=1, help="number of shards of the dump (default: 1)")
    stats.add_argument("--out", type=Path, required=True, help="statistics file to write (.npy)")


def _parse_value(text: str, default: Any) -> Any:
    if isinstance(default, bool):
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true/false, got {text!r}")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    return text


def _kaldi_options(kind: str, pairs: list[str]) -> dict[str, Any]:
    from speechssl.features.dump import KALDI_FEATURES

    params = {n: p.default for n, p in inspect.signature(KALDI_FEATURES[kind]).parameters.items()
              if p.default is not inspect.Parameter.empty and n not in ("lengths", "generator")}
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in params:
            raise ValueError(f"--opt {pair!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(params))} "
                             f"(options of {kind})")
        try:
            options[key] = _parse_value(value.strip(), params[key])
        except ValueError as exc:
            raise ValueError(f"--opt {pair!r}: {exc}") from None
    return options


def _dump(args: argparse.Namespace) -> int:
    import torch

    from speechssl.features.dump import KaldiFeatureSource, UpstreamFeatureSource, dump_features

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    manifest = args.manifest_dir / f"{args.split}.tsv"
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest {manifest} not found; --manifest-dir must hold {args.split}.tsv")
    if args.feature == "upstream":
        if not args.upstream or args.layer is None:
            raise ValueError("--feature upstream needs --upstream MODEL and --layer L")
        if args.opt:
            raise ValueError("--opt sets Kaldi feature options; it does not apply to --feature upstream")
        from speechssl import hub

        model = hub.load(args.upstream, device=device)
        amp = (torch.float16 if device.type == "cuda" else torch.bfloat16) if args.fp16 else None
        source = UpstreamFeatureSource(model, args.layer, max_chunk=args.max_chunk, amp_dtype=amp,
                                       name=str(args.upstream))
    else:
        if args.upstream or args.layer is not None or args.fp16:
            raise ValueError("--upstream, --layer and --fp16 apply only to --feature upstream")
        source = KaldiFeatureSource(args.feature, device=device, **_kaldi_options(args.feature, args.opt))
    _log.info("dumping %s features (dim %d, %.0f frames/s) of %s, shard %d/%d, to %s", args.feature,
              source.dim, source.frame_rate_hz, manifest, args.shard, args.nshard, args.out)
    dump_features(manifest, args.out, source, split=args.split, rank=args.shard, nshard=args.nshard,
                  overwrite=args.overwrite, resample=args.resample, progress=not args.no_progress,
                  checkpoint_interval_s=args.checkpoint_interval)
    return 0


def _stats(args: argparse.Namespace) -> int:
    from speechssl.features.dump import feature_stats

    stats = feature_stats(args.feat_dir, args.split, args.nshard)
    stats.save(args.out)
    _log.info("CMVN stats over %d frames (dim %d) written to %s", int(stats.count), stats.dim, args.out)
    return 0


def main(args: argparse.Namespace) -> int:
    if args.action == "dump":
        return _dump(args)
    return _stats(args)
