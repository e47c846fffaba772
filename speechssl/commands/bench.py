"""``speechssl bench``: run a benchmark script from ``tools/bench`` and pass its JSON line through.

Benchmarks live in the source checkout (``tools/bench/<name>.py``), not in the installed
package; each prints one JSON line of figures and ratios against a baseline measured in the
same run.
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

_log = logging.getLogger(__name__)


def _default_bench_dir() -> Path:
    import speechssl

    # An editable install or a run from a clone: tools/ sits beside the package.
    return Path(speechssl.__file__).resolve().parent.parent / "tools" / "bench"


def _available(bench_dir: Path) -> list[str]:
    return sorted(p.stem for p in bench_dir.glob("*.py") if not p.name.startswith("_"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    bench_dir = _default_bench_dir()
    names = ", ".join(_available(bench_dir)) if bench_dir.is_dir() else "none found (run from a source checkout)"
    parser.description = (
        "Run tools/bench/NAME.py with this Python and pass its output through: one JSON line "
        '{"bench": ..., "baseline": ..., "ratio": ...} with its figures and the ratio against a baseline '
        "measured in the same run (--out appends the lines to a file). Without NAME, list the benchmarks. "
        f"Benchmarks here: {names}. Most take --quick for a short run (e.g. speechssl bench kmeans --quick).")
    parser.add_argument("name", nargs="?", help="benchmark name (a file tools/bench/NAME.py); omit to list them")
    parser.add_argument("--bench-dir", type=Path, default=None,
                        help="directory holding the benchmark scripts (default: tools/bench of this checkout)")
    parser.add_argument("--out", type=Path, default=None, help="also append the JSON line(s) to this file")
    parser.add_argument("args", nargs=argparse.REMAINDER,
                        help="arguments passed to the benchmark (e.g. --quick); put them after the name")


def main(args: argparse.Namespace) -> int:
    bench_dir = args.bench_dir or _default_bench_dir()
    if not bench_dir.is_dir():
        raise FileNotFoundError(
            f"benchmark directory {bench_dir} not found; benchmarks ship with the source checkout, "
            "run from a clone or pass --bench-dir")
    names = _available(bench_dir)
    if not args.name:
        for name in names:
            print(name)
        return 0
    script = bench_dir / f"{args.name}.py"
    if not script.is_file():
        raise FileNotFoundError(f"no benchmark {args.name!r} in {bench_dir}; available: {', '.join(names)}")
    _log.info("running %s %s", script, " ".join(args.args))
    proc = subprocess.run([sys.executable, str(script), *args.args], stdout=subprocess.PIPE, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    for line in lines:
        print(line)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark {args.name} exited with status {proc.returncode}")
    results = []
    for line in lines:
        try:
            results.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    if not results:
        raise RuntimeError(f"benchmark {args.name} printed no JSON line")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a", encoding="utf-8") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")
    return 0
