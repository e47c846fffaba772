"""recipes/superb/run.sh: option checks, and a two-task x two-upstream sweep on the tiny corpus."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "recipes/superb/run.sh"
_FAST = "trainer.max_updates=4,trainer.validate_every_updates=2,trainer.save_every_updates=2"


def _bash(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_help_lists_the_stages(tmp_path: Path) -> None:
    r = _bash("--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.findall(r"^\s+(\d)\s+\w", r.stdout, flags=re.M) == ["1", "2"]
    assert "--upstream NAME=SPEC" in r.stdout


@pytest.mark.parametrize("args, message", [
    ([], "--data-dir CORPUS is required"),
    (["--data", "nowhere"], "--data-dir: no such directory 'nowhere'"),
    (["--data-dir", "nowhere"], "--data-dir: no such directory 'nowhere'"),
    (["--data", "."], "give at least one --upstream NAME=SPEC"),
    (["--data", ".", "--upstream", "fbank"], "--upstream must be NAME=SPEC"),
    (["--data", ".", "--upstream", "a=fbank", "--nj", "0"], "--nj must be at least 1"),
    (["--data", ".", "--upstream", "a=fbank", "--conf-dir", "nowhere"], "--conf-dir: no such directory 'nowhere'"),
    (["--data", ".", "--upstream", "a=fbank", "--seeds", "1,2"], "--seeds must be non-negative integers"),
    (["--bogus"], "unknown option '--bogus'"),
])
def test_bad_options_fail_with_a_message(args: list[str], message: str, tmp_path: Path) -> None:
    r = _bash(*args, cwd=tmp_path)
    assert r.returncode == 1
    assert message in r.stderr
    assert not (tmp_path / "exp").exists()


def test_budget_confs_are_valid_runner_configs() -> None:
    from speechssl.downstream.runner import resolve_configs

    confs = sorted((ROOT / "recipes/superb/conf").glob("*.yaml"))
    assert {c.stem for c in confs} == {"asr", "sd", "sf"}
    for conf in confs:
        _, _, trainer, _ = resolve_configs(config_file=conf, flags={"task": conf.stem, "upstream": "fbank"})
        # every setting of the file reaches the resolved runner config
        for key, value in yaml.safe_load(conf.read_text())["trainer"].items():
            assert getattr(trainer, key) == value, (conf.name, key)
        assert trainer.max_updates % trainer.validate_every_updates == 0, conf.name


def test_sweep_runs_every_pair_and_reports(tiny_corpus: Path, tmp_path: Path) -> None:
    exp = tmp_path / "sweep"
    args = ["--data", str(tiny_corpus), "--exp-dir", str(exp), "--tasks", "ks er", "--nj", "2",
            "--upstream", "fbank=fbank", "--upstream", "mfcc=mfcc", "--", _FAST]
    r = _bash(*args, cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    results = {}
    for task in ("ks", "er"):
        for name in ("fbank", "mfcc"):
            res = json.loads((exp / "downstream" / f"{task}_{name}" / "result.json").read_text())
            # the best-validation checkpoint is scored: update 2 or 4 of the 4 asked for
            assert res["task"] == task and res["config"]["trainer"]["max_updates"] == 4
            assert res["num_updates"] in (2, 4)
            results[task, name] = res["value"]
    table = (exp / "report/report.md").read_text()
    for name in ("fbank", "mfcc"):
        assert name in table
    # a rerun skips the finished stages and leaves their results untouched
    r = _bash(*args, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.findall(r"Stage (\d): skipped \(up to date", r.stderr) == ["1", "2"]
    for (task, name), value in results.items():
        assert json.loads((exp / "downstream" / f"{task}_{name}" / "result.json").read_text())["value"] == value


def test_seeds_train_one_head_each_and_report_mean_and_std(tiny_corpus: Path, tmp_path: Path) -> None:
    exp = tmp_path / "seeds"
    r = _bash("--data", str(tiny_corpus), "--exp-dir", str(exp), "--tasks", "er", "--nj", "2", "--seeds", "1 2",
              "--upstream", "fbank=fbank", "--", _FAST, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = {d: json.loads((exp / "downstream" / d / "result.json").read_text()) for d in ("er_fbank", "er_fbank_seed2")}
    assert [runs[d]["seed"] for d in ("er_fbank", "er_fbank_seed2")] == [1, 2]
    values = [100 * run["value"] for run in runs.values()]
    mean = sum(values) / 2
    row = next(line for line in (exp / "report/report.md").read_text().splitlines() if line.startswith("| `fbank`"))
    assert f"{mean:.2f} ± " in row and "(2)" in row
