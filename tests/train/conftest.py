from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.tiny_task import make_corpus

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 train + 6 valid synthetic utterances (0.25-0.75 s) with manifests."""
    return make_corpus(tmp_path_factory.mktemp("tiny_data"))




def train_records(exp_dir: Path) -> dict[int, dict]:
    """The last ``metrics.jsonl`` train record of each update."""
    out: dict[int, dict] = {}
    for line in (exp_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["split"] == "train":
            out[rec["update"]] = rec
    return out


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def run_tiny(data: Path, exp_dir: Path, *overrides: str, nproc: int = 1, timeout: float = 120) -> None:
    """Train the tiny task in fresh process(es): plain python, or torchrun with ``nproc`` ranks."""
    if nproc == 1:
        cmd = [sys.executable, "-m", "tests.train.tiny_task"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "tests.train.tiny_task"]
    cmd += ["--data", str(data), "--exp-dir", str(exp_dir), *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
