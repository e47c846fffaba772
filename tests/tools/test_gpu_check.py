"""tools/gpu_check.sh: valid bash, its steps exist, and without a GPU it says so and falls back to the CPU."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "gpu_check.sh"


def test_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def test_dry_run_lists_every_step_with_an_existing_benchmark():
    out = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True,
                         env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines[0]["gpu_check"] == "device"
    steps = {d["gpu_check"]: d for d in lines[1:]}
    assert list(steps) == ["tests", "kmeans", "ssm", "ssamba_vs_transformer"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        assert lines[0]["name"] is None and "CPU fallback" in lines[0]["note"]
    for name in ("kmeans", "ssm", "ssamba_vs_transformer"):
        cmd = steps[name]["command"]
        assert f"tools/bench/{name}.py --device {device}" in cmd
        assert ("--quick" in cmd) == (device == "cpu")
        bench = ROOT / "tools" / "bench" / f"{name}.py"
        help_out = subprocess.run([sys.executable, str(bench), "--help"], capture_output=True, text=True, timeout=120)
        assert help_out.returncode == 0 and "--device" in help_out.stdout and "--quick" in help_out.stdout


def test_unknown_option_is_one_line():
    out = subprocess.run(["bash", str(SCRIPT), "--fast"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.strip() == "gpu_check.sh: unknown option '--fast' (see --help)"
