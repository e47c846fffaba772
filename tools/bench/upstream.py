"""Benchmark speechssl's HuBERT against ``transformers.HubertModel`` with the same weights.

    python tools/bench/upstream.py [--quick] [--sizes base,tiny] [--batch 4] [--seconds 8] [--repeats 3] [--threads 2]

For each size, a randomly initialised speechssl HuBERT is converted with the project's HF
writer (``speechssl.convert.hf.write_hf_dir``, what ``speechssl hub convert --to hf`` runs) and
loaded with ``transformers.HubertModel.from_pretrained`` (SDPA attention, transformers'
default), so both models hold the same numbers. Both run in eval mode (no dropout) on the same
``(batch, seconds * 16000)`` batch of equal-length waveforms, as a user of either would call
them: speechssl through the upstream contract ``model(list_of_wavs)``, transformers through
``model(input_values)`` (no attention mask: what transformers documents for group-norm HuBERT
Base). Two modes:

* ``fwd``: inference (``torch.inference_mode``), the runner's feature extraction;
* ``fwdbwd``: forward + backward of ``mean(last_hidden_state ** 2)`` (a training step's cost).

The runs are interleaved (ours, theirs, ours, ...) after one warm-up each, and the median of
``--repeats`` is reported. Prints ONE JSON line; ``ratio_*`` are transformers' time / ours
(> 1: speechssl faster; ``ratio`` is the smallest of them), ``max_abs_diff`` the largest
difference of the last hidden state. ``--quick``: tiny only, 2 × 2 s, one timed run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings


def _models(size: str):
    import torch
    import transformers

    from speechssl.convert.hf import write_hf_dir
    from speechssl.upstream.hubert import config as hubert_config
    from speechssl.upstream.hubert.model import HubertModel

    torch.manual_seed(0)
    ours = HubertModel(hubert_config.PRESETS[size]()).eval()
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_hf_dir(ours, d)
        theirs = transformers.HubertModel.from_pretrained(d).eval()
    transformers.logging.set_verbosity_error()
    return ours, theirs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="base,tiny", help="comma-separated HuBERT presets")
    parser.add_argument("--batch", type=int, default=4, help="waveforms per batch")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each waveform (16 kHz)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per model and mode (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--modes", default="fwd,fwdbwd", help="fwd, fwdbwd or both")
    parser.add_argument("--quick", action="store_true", help="tiny only, batch 2 x 2 s, one timed run")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.batch, args.seconds, args.repeats = "tiny", 2, 2.0, 1

    import torch

    torch.set_num_threads(args.threads)
    x = torch.randn(args.batch, int(args.seconds * 16000), generator=torch.Generator().manual_seed(0))
    wavs = list(x)
    rows = []
    for size in args.sizes.split(","):
        ours, theirs = _models(size)
        with torch.inference_mode():
            diff = float((ours(wavs)["last_hidden_state"] - theirs(x).last_hidden_state).abs().max())
        row: dict = {"size": size, "max_abs_diff": diff,
                     "params": sum(p.numel() for p in ours.parameters())}
        for mode in args.modes.split(","):
            def run_ours() -> None:
                if mode == "fwd":
                    with torch.inference_mode():
                        ours(wavs)
                else:
                    ours(wavs)["last_hidden_state"].pow(2).mean().backward()
                    ours.zero_grad(set_to_none=True)

            def run_theirs() -> None:
                if mode == "fwd":
                    with torch.inference_mode():
                        theirs(x)
                else:
                    theirs(x).last_hidden_state.pow(2).mean().backward()
                    theirs.zero_grad(set_to_none=True)

            run_ours()
            run_theirs()
            times: dict[str, list[float]] = {"ours": [], "theirs": []}
            for _ in range(args.repeats):
                for name, fn in (("ours", run_ours), ("theirs", run_theirs)):
                    t0 = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t0)
                    print(f"[upstream] {size} {mode} {name} {times[name][-1]:.3f} s", file=sys.stderr, flush=True)
            ours_s, theirs_s = statistics.median(times["ours"]), statistics.median(times["theirs"])
            row[f"{mode}_speechssl_s"] = round(ours_s, 4)
            row[f"{mode}_transformers_s"] = round(theirs_s, 4)
            row[f"ratio_{mode}"] = round(theirs_s / ours_s, 3)
        rows.append(row)
    ratios = {f"{r['size']}_{m}": r[f"ratio_{m}"] for r in rows for m in args.modes.split(",")}
    print(json.dumps({
        "bench": "upstream",
        "baseline": f"transformers {__import__('transformers').__version__} HubertModel (sdpa), same weights",
        "ratio": min(ratios.values()),
        "ratio_is": "transformers time / speechssl time, the smallest over sizes and modes (> 1: speechssl faster)",
        "batch": args.batch, "seconds": args.seconds, "threads": args.threads, "repeats": args.repeats,
        "torch": torch.__version__,
        "ratios": ratios,
        "sizes": rows,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
