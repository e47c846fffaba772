"""recipes/hubertopic/run.sh: --help, option errors, and (slow) LDA + pretraining stages on example data."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes/hubertopic/run.sh"


def _bash(*args: str, cwd: Path, timeout: float = 120, **extra_env: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **extra_env)
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(["bash", str(RECIPE), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_help_lists_the_stages(tmp_path: Path) -> None:
    r = _bash("--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.findall(r"^\s+(\d)\s+\w", r.stdout, flags=re.M) == [str(n) for n in range(8)]
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize("args, message", [
    (["--preset", "huge"], "--preset must be tiny or base"),
    (["--topics", "1"], "--topics must be an integer >= 2"),
    (["--topic-weight", "heavy"], "--topic-weight must be a non-negative number"),
    (["--bogus"], "unknown option '--bogus'"),
    (["--", "oops"], "must be KEY=VALUE"),
])
def test_bad_options_fail_with_a_message(args: list[str], message: str, tmp_path: Path) -> None:
    r = _bash(*args, cwd=tmp_path)
    assert r.returncode != 0 and message in r.stderr, r.stderr


@pytest.mark.slow
def test_lda_and_pretraining_stages_run_and_are_skipped_once_done(tmp_path: Path) -> None:
    from speechssl.upstream.hubert.example import write_example

    write_example(tmp_path / "data")
    lab = tmp_path / "exp/labels/iter1"
    lab.mkdir(parents=True)
    for f in ("train.km", "valid.km", "dict.km.txt"):
        shutil.copy(tmp_path / "data" / f, lab / f)
    args = ["--data-dir", str(tmp_path / "data"), "--exp-dir", str(tmp_path / "exp"), "--stage", "1",
            "--stop-stage", "2", "--topics", "4", "--", "task.label_rate=[50.0]", "trainer.max_updates=2",
            "trainer.schedule.warmup_updates=1", "trainer.max_tokens=32000", "trainer.validate_every_updates=0",
            "trainer.save_every_updates=0"]
    r = _bash(*args, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (lab / "train.topic").is_file() and (lab / "lda.safetensors").is_file()
    assert (tmp_path / "exp/iter1/checkpoint_last.pt").is_file()
    assert sorted(p.name for p in (tmp_path / "exp/hubertopic_stages").iterdir()) == [".stage1.done", ".stage2.done"]
    # the same range again: an explicit --stage 1 would redo stage 1; continuing the range (as a
    # calling recipe does) skips both stages
    again = _bash(*args, cwd=tmp_path, SPEECHSSL_RECIPE_RESUME="1")
    assert again.returncode == 0 and again.stderr.count("skipped (up to date") == 2, again.stderr[-2000:]
