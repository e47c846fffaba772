"""Benchmark SSAMBA's bidirectional Mamba stack against an SSAST-style transformer of the same size.

    python tools/bench/ssamba_vs_transformer.py [--quick] [--mode fwdbwd|fwd] [--width 192] [--depth 2]

Both encoders take the same ``(B, L, D)`` patch-token embeddings (the patch embedding is
identical and cheap, so it is left out) and run ``depth`` blocks plus the final norm:

* SSAMBA: :class:`speechssl.upstream.ssamba.SsambaModel`'s block stack (Vim "v2" bidirectional
  Mamba, d_state 16, expand 2, RMSNorm; selective scan ``impl="auto"``).
* with ``--with-checkpointing``, also SSAMBA with ``checkpoint_activations=True``: each block's
  mixer is recomputed in the backward pass instead of keeping its activations.
* SSAST-style transformer: pre-LN ViT blocks (``speechssl.nn.transformer.TransformerEncoderLayer``
  with ``layer_norm_first=True``, 4x MLP, GELU, ``D / 64`` heads, PyTorch SDPA attention), final LayerNorm.
  SDPA picks a fused (flash-style) kernel whose memory is linear in the tokens.
* with ``--with-materialized-attention``, also that transformer with SDPA's math backend, which
  materialises the ``(heads, L, L)`` attention matrix as SSAST's timm ViT does: the baseline the
  SSAMBA paper's memory figure is measured against.

For each token count (default 512 ... 8192; ``--quick``: 256 ... 2048) each model runs
forward+backward (``--mode fwd``: forward under no_grad, the paper's "batch inference") in a
fresh subprocess: one warm-up then the median of ``--repeats`` runs (one cold run at >= 4096
tokens to bound the run time). Peak memory is measured as in ``tools/bench/ssm.py``
(resident-set growth per process on CPU; ``max_memory_allocated`` on CUDA).

Prints ONE JSON line with one entry per size; ``ratio`` is transformer time / SSAMBA time at
the largest size. The SSAMBA paper reports 92.7% faster and 95.4% less memory than SSAST
(tiny, batch inference, ~22k tokens, GPU).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ssm import measure_in_subprocess, time_and_peak  # noqa: E402  (sibling benchmark's helpers)


def _build(kind: str, width: int, depth: int):
    import dataclasses

    import torch
    from torch import nn

    torch.manual_seed(0)
    if kind in ("ssamba", "ssamba_ckpt"):
        from speechssl.upstream.ssamba.config import nano
        from speechssl.upstream.ssamba.model import SsambaModel

        cfg = dataclasses.replace(nano(), embed_dim=width, depth=depth, d_state=16, drop_path_rate=0.0,
                                  checkpoint_activations=kind == "ssamba_ckpt")
        model = SsambaModel(cfg)

        def run(x: torch.Tensor) -> torch.Tensor:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
            return model.encode(x, lengths)[-1]
        return model, run

    from torch.nn.attention import SDPBackend, sdpa_kernel

    from speechssl.nn.transformer import TransformerEncoderLayer

    layers = nn.ModuleList([TransformerEncoderLayer(width, 4 * width, max(1, width // 64), dropout=0.0,
                                                    attention_dropout=0.0, layer_norm_first=True)
                            for _ in range(depth)])
    norm = nn.LayerNorm(width)
    model = nn.ModuleDict({"layers": layers, "norm": norm})

    def run(x: torch.Tensor) -> torch.Tensor:
        for layer in layers:
            x = layer(x)
        return norm(x)

    if kind == "transformer_math":
        def run_math(x: torch.Tensor) -> torch.Tensor:
            with sdpa_kernel(SDPBackend.MATH):
                return run(x)
        return model, run_math
    return model, run


def _worker(kind: str, tokens: int, args: argparse.Namespace) -> dict:
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model, run = _build(kind, args.width, args.depth)
    model.to(args.device)
    x = torch.randn(args.batch, tokens, args.width, device=args.device, generator=None)

    def step() -> None:
        if args.mode == "fwd":
            with torch.no_grad():
                run(x)
        else:
            run(x).float().pow(2).mean().backward()
            model.zero_grad(set_to_none=True)

    big = tokens >= 4096
    seconds, peak = time_and_peak(step, args.device, 1 if big else args.repeats, warmup=not big)
    return {"seconds": seconds, "peak_bytes": peak, "threads": torch.get_num_threads(),
            "params": sum(p.numel() for p in model.parameters())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="token counts 256 ... 2048")
    parser.add_argument("--sizes", type=str, default="", help="comma-separated token counts (overrides the defaults)")
    parser.add_argument("--mode", choices=["fwdbwd", "fwd"], default="fwdbwd", help="forward+backward or inference")
    parser.add_argument("--width", type=int, default=192, help="D of both models (SSAMBA/SSAST tiny: 192)")
    parser.add_argument("--depth", type=int, default=2, help="blocks of both models")
    parser.add_argument("--batch", type=int, default=1, help="sequences per batch")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration below 4096 tokens")
    parser.add_argument("--with-checkpointing", action="store_true",
                        help="also run SSAMBA with activation checkpointing (forward+backward only)")
    parser.add_argument("--with-materialized-attention", action="store_true",
                        help="also run the transformer with an explicit (L, L) attention matrix (SSAST's)")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "TOKENS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.with_checkpointing and args.mode != "fwdbwd":
        parser.error("--with-checkpointing needs --mode fwdbwd (checkpointing only acts in training)")

    if args.worker:
        kind, tokens = args.worker
        print(json.dumps(_worker(kind, int(tokens), args)))
        return 0

    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    else:
        sizes = [256, 512, 1024, 2048] if args.quick else [512, 1024, 2048, 4096, 8192]
    common = ["--mode", args.mode, "--width", str(args.width), "--depth", str(args.depth), "--batch",
              str(args.batch), "--device", args.device, "--threads", str(args.threads), "--repeats", str(args.repeats)]
    rows = []
    params = {}
    for tokens in sizes:
        row: dict = {"tokens": tokens}
        kinds = (("ssamba", "transformer") + (("ssamba_ckpt",) if args.with_checkpointing else ())
                 + (("transformer_math",) if args.with_materialized_attention else ()))
        for kind in kinds:
            print(f"[ssamba_vs_transformer] {kind} {args.mode} tokens={tokens}", file=sys.stderr, flush=True)
            m = measure_in_subprocess(__file__, [kind, str(tokens), *common])
            row[f"{kind}_s"] = round(m["seconds"], 4)
            row[f"{kind}_peak_bytes"] = m["peak_bytes"]
            params[kind] = m["params"]
            row["threads"] = m["threads"]
        row["speedup"] = round(row["transformer_s"] / max(row["ssamba_s"], 1e-12), 3)
        row["memory_ratio"] = round(row["transformer_peak_bytes"] / max(row["ssamba_peak_bytes"], 1), 3)
        row["ssamba_faster_pct"] = round(100 * (1 - row["ssamba_s"] / row["transformer_s"]), 1)
        row["ssamba_less_memory_pct"] = round(100 * (1 - row["ssamba_peak_bytes"] / max(row["transformer_peak_bytes"], 1)), 1)
        if "transformer_math_s" in row:
            row["speedup_vs_materialized"] = round(row["transformer_math_s"] / max(row["ssamba_s"], 1e-12), 3)
            row["memory_ratio_vs_materialized"] = round(
                row["transformer_math_peak_bytes"] / max(row["ssamba_peak_bytes"], 1), 3)
        if "ssamba_ckpt_s" in row:
            row["ssamba_ckpt_speedup"] = round(row["transformer_s"] / max(row["ssamba_ckpt_s"], 1e-12), 3)
            row["ssamba_ckpt_memory_ratio"] = round(row["transformer_peak_bytes"] / max(row["ssamba_ckpt_peak_bytes"], 1), 3)
        rows.append(row)
    last = rows[-1]
    print(json.dumps({
        "bench": "ssamba_vs_transformer",
        "baseline": "SSAST-style pre-LN transformer, same width/depth (SDPA attention)",
        "ratio": last["speedup"],
        "ratio_is": f"transformer time / SSAMBA time, {args.mode}, {last['tokens']} tokens",
        "memory_ratio": last["memory_ratio"],
        "memory_ratio_is": "transformer peak bytes / SSAMBA peak bytes at the largest size (> 1: SSAMBA smaller)",
        "mode": args.mode, "width": args.width, "depth": args.depth, "batch": args.batch, "device": args.device,
        "params": params,
        "memory_method": ("CUDA max_memory_allocated delta" if args.device == "cuda" else
                          "resident-set growth (ru_maxrss - RSS before the runs) in a fresh process per config"),
        "paper": "92.7% faster, 95.4% less memory than SSAST (tiny, batch inference, ~22k tokens, GPU)",
        "sizes": rows,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
