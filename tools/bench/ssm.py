"""Benchmark the selective scan: native CPU kernel, chunked torch path (and mamba-ssm's kernel on CUDA) vs the sequential reference.

    python tools/bench/ssm.py [--quick] [--device cpu|cuda] [--threads N] [--measure-all]

For L in 512, 2048, 8192 (``--quick``: 512, 2048) at B=8, D=384, N=16 (Mamba's shapes: inputs are
contiguous ``(B, D, L)``, delta with softplus and bias, D skip and z gate), every implementation
runs forward, and forward+backward, in a fresh subprocess per configuration. Prints ONE JSON line.
``native`` and ``chunked`` get contiguous ``(B, D, L)`` inputs (mamba-ssm's kernel layout);
``native_tm`` and ``chunked_tm`` get ``(B, D, L)`` views of time-major ``(B, L, D)`` memory, which
is what a Mamba block passes. The headline ``ratio`` is the fastest path this machine has
(``native`` when its kernel builds, else ``chunked``; ``fused`` on CUDA with mamba-ssm).

Timing: one warm-up run, then the median of ``--repeats`` runs (the reference: one untimed
warm-up is skipped at L >= 2048 to keep the run short; its first run is timed).

Peak memory on CPU: torch's CPU allocator has no statistics and ``tracemalloc`` does not see it,
so each configuration runs in its own process and we report the growth of the resident set
(``ru_maxrss`` after the runs minus the resident size just before them, inputs already
allocated). That counts every byte the process touched at its peak, allocator caching included,
so it is an upper bound on live tensor bytes. On CUDA: ``torch.cuda.max_memory_allocated``
minus the allocation before the run.

The reference's forward+backward at L=8192 keeps several B·D·L·N float32 tensors (~2 GiB each)
and takes minutes; unless ``--measure-all`` is given it is extrapolated linearly from L=2048 (its
cost per step is constant) and marked ``"extrapolated_from_L": 2048`` in the output.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

B, D, N = 8, 384, 16


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def measure_in_subprocess(script: str, args: list[str], timeout: float = 3600) -> dict:
    """Run ``script --worker ARGS`` in a fresh interpreter and return the JSON dict it prints last."""
    proc = subprocess.run([sys.executable, script, "--worker", *args], stdout=subprocess.PIPE, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args} exited with status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def time_and_peak(fn, device: str, repeats: int, warmup: bool) -> tuple[float, int]:
    """Median seconds of ``fn()`` over ``repeats`` runs and the peak extra bytes (see module docstring)."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    if warmup:
        fn()
        sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() if device == "cuda" else _maxrss_bytes()) - base
    return statistics.median(times), max(peak, 0)


def _worker(impl: str, mode: str, length: int, device: str, threads: int, repeats: int, chunk: int) -> dict:
    import torch

    from speechssl.nn.ssm import selective_scan

    if threads > 0:
        torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    x = {
        "u": torch.randn(B, D, length, generator=gen),
        "delta": torch.randn(B, D, length, generator=gen) * 0.5 - 4.0,
        "A": -torch.arange(1, N + 1, dtype=torch.float32).repeat(D, 1),   # S4D-real, as Mamba's init
        "B": torch.randn(B, N, length, generator=gen),
        "C": torch.randn(B, N, length, generator=gen),
        "D": torch.ones(D),
        "z": torch.randn(B, D, length, generator=gen),
        "delta_bias": torch.rand(D, generator=gen) * 4 - 6,
    }
    x = {k: v.to(device) for k, v in x.items()}
    if impl.endswith("_tm"):   # (B, D, L) views of time-major (B, L, D) memory, as a Mamba block passes them
        impl = impl[:-3]
        x.update({k: x[k].transpose(1, 2).contiguous().transpose(1, 2) for k in ("u", "delta", "z")})
    grad_keys = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    if mode == "fwdbwd":
        x = {k: (v.requires_grad_() if k in grad_keys else v) for k, v in x.items()}

    def step() -> None:
        if mode == "fwd":
            with torch.no_grad():
                selective_scan(**x, delta_softplus=True, impl=impl, chunk_size=chunk)
        else:
            out = selective_scan(**x, delta_softplus=True, impl=impl, chunk_size=chunk)
            out.sum().backward()
            for v in x.values():
                v.grad = None

    warmup = impl != "ref" or length < 2048
    seconds, peak = time_and_peak(step, device, repeats if impl != "ref" else 1, warmup)
    return {"seconds": seconds, "peak_bytes": peak, "threads": torch.get_num_threads()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="only L = 512 and 2048")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per fast configuration (median)")
    parser.add_argument("--chunk-size", type=int, default=0, help="chunked path's steps per chunk (default: library's)")
    parser.add_argument("--measure-all", action="store_true",
                        help="also measure the reference's forward+backward at L=8192 (minutes, many GiB)")
    parser.add_argument("--worker", nargs=3, metavar=("IMPL", "MODE", "L"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    from speechssl.nn.ssm import auto_chunk_size, fused_available, native_available

    chunk = args.chunk_size or auto_chunk_size(B, D, N)
    if args.worker:
        impl, mode, length = args.worker
        print(json.dumps(_worker(impl, mode, int(length), args.device, args.threads, args.repeats, chunk)))
        return 0

    lengths = [512, 2048] if args.quick else [512, 2048, 8192]
    impls = ["chunked", "chunked_tm", "ref"]
    if args.device == "cpu" and native_available():
        impls[:0] = ["native", "native_tm"]
    if args.device == "cuda" and fused_available():
        impls.insert(0, "fused")
    common = ["--device", args.device, "--threads", str(args.threads), "--repeats", str(args.repeats),
              "--chunk-size", str(chunk)]
    results = []
    for length in lengths:
        for impl in impls:
            row: dict = {"impl": impl, "L": length}
            for mode in ("fwd", "fwdbwd"):
                if impl == "ref" and mode == "fwdbwd" and length > 2048 and not args.measure_all:
                    base = next(r for r in results if r["impl"] == "ref" and r["L"] == 2048)
                    scale = length / 2048
                    row["fwdbwd_s"] = base["fwdbwd_s"] * scale
                    row["fwdbwd_peak_bytes"] = int(base["fwdbwd_peak_bytes"] * scale)
                    row["fwdbwd_extrapolated_from_L"] = 2048
                    continue
                print(f"[ssm bench] {impl} {mode} L={length}", file=sys.stderr, flush=True)
                m = measure_in_subprocess(__file__, [impl, mode, str(length), *common])
                row[f"{mode}_s"] = round(m["seconds"], 4)
                row[f"{mode}_peak_bytes"] = m["peak_bytes"]
                row["threads"] = m["threads"]
            row["fwdbwd_peak_bytes_per_L"] = int(row["fwdbwd_peak_bytes"] / length)
            results.append(row)

    def ratio(impl: str, mode: str, length: int, key: str = "s") -> float:
        fast = next(r for r in results if r["impl"] == impl and r["L"] == length)
        ref = next(r for r in results if r["impl"] == "ref" and r["L"] == length)
        return round(ref[f"{mode}_{key}"] / max(fast[f"{mode}_{key}"], 1e-12), 2)

    fast = impls[0]
    others = {}
    for impl in impls[1:-1]:    # every path but the headline one and the reference
        for mode in ("fwd", "fwdbwd"):
            others[f"speedup_{mode}_{impl}"] = {str(n): ratio(impl, mode, n) for n in lengths}
    summary = {
        "bench": "ssm_selective_scan",
        "baseline": "ref (sequential loop, speechssl.nn.ssm.selective_scan_ref)",
        "impl": fast,
        "ratio": ratio(fast, "fwd", 2048),
        "ratio_is": f"reference time / {fast} time, forward, L=2048 (target >= 10 on CPU)",
        "speedup_fwd": {str(n): ratio(fast, "fwd", n) for n in lengths},
        "speedup_fwdbwd": {str(n): ratio(fast, "fwdbwd", n) for n in lengths},
        "memory_ratio_fwdbwd": {str(n): ratio(fast, "fwdbwd", n, "peak_bytes") for n in lengths},
        **others,
        f"{fast}_fwdbwd_peak_bytes_per_L": {str(r["L"]): r["fwdbwd_peak_bytes_per_L"]
                                            for r in results if r["impl"] == fast},
        "shape": {"B": B, "D": D, "N": N}, "chunk_size": chunk, "device": args.device,
        "memory_method": ("CUDA max_memory_allocated delta" if args.device == "cuda" else
                          "resident-set growth (ru_maxrss - RSS before the runs) in a fresh process per config"),
        "results": results,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
