"""recipes/lighthubert/run.sh: --help, option checks, the speechssl calls of each stage (a fake
speechssl records them), stage 5's sweep over the teacher and the subnets, and (slow) stages 1-4
for real on the tiny example (random tiny HuBERT teacher, 2 updates per distillation stage)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes/lighthubert/run.sh"
TINY_SUBNETS = ["max", "min", "w64", "l2"]


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = env or dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(["bash", str(RECIPE), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _teacher(tmp_path: Path) -> Path:
    """A stand-in HuBERT recipe output: iter2/checkpoint_last.pt and corpus/pretrain manifests."""
    hubert = tmp_path / "hubert_exp"
    (hubert / "iter2").mkdir(parents=True)
    (hubert / "iter2" / "checkpoint_last.pt").write_text("teacher")
    (hubert / "corpus" / "pretrain").mkdir(parents=True)
    for split in ("train", "valid"):
        (hubert / "corpus" / "pretrain" / f"{split}.tsv").write_text(f"/root\n{split}.wav\t16000\n")
    return hubert


def test_help_lists_the_stages(tmp_path: Path) -> None:
    r = _run("--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.findall(r"^\s+(\d)\s+\w", r.stdout, flags=re.M) == [str(n) for n in range(6)]
    assert "--subnets" in r.stdout and "--teacher" in r.stdout
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unknown option '--bogus'"),
    (["--preset", "huge"], "--preset must be tiny, small or base"),
    (["--stage", "x"], "--stage must be a non-negative integer"),
    (["--repeats", "0"], "--repeats must be at least 1"),
    (["--subnets", "embed=64"], "name the explicit subnet 'embed=64' (NAME=embed=64)"),
    (["--subnets", "max max"], "'max' given twice"),
    (["--teacher", "nowhere"], "--teacher nowhere: no such model directory"),
    (["--", "oops"], "must be KEY=VALUE or stage1:/stage2:KEY=VALUE, got 'oops'"),
])
def test_bad_options_fail_with_a_message(tmp_path: Path, args: list[str], message: str) -> None:
    r = _run(*args, cwd=tmp_path)
    assert r.returncode == 1 and message in r.stderr, (args, r.stderr)
    assert not (tmp_path / "exp").exists()


def test_stages_call_convert_and_distil_then_sweep_the_subnets(tmp_path: Path) -> None:
    from tests.recipes.test_stages import fake_env

    env, calls = fake_env(tmp_path)
    hubert = _teacher(tmp_path)
    exp = tmp_path / "exp"
    data = hubert / "corpus" / "pretrain"
    r = _run("--teacher", str(hubert), "--exp-dir", str(exp), "--stop-stage", "3", "--",
             "trainer.max_updates=7", "stage2:trainer.max_updates=9", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert calls.read_text().splitlines() == [
        f"corpus synth --preset tiny --seed 0 --out {exp}/eval_corpus",  # the teacher brings its corpus
        f"hub convert {hubert}/iter2/checkpoint_last.pt {exp}/teacher",
        f"pretrain --method lighthubert --preset tiny --data {data} --exp-dir {exp}/distil "
        f"task.teacher={exp}/teacher task.stage=1 task.max_sample_size=160000 trainer.max_updates=7",
        f"hub convert {exp}/distil/checkpoint_last.pt {exp}/student",
        f"pretrain --method lighthubert --preset tiny --data {data} --exp-dir {exp}/supernet_train "
        f"task.teacher={exp}/teacher task.stage=2 task.init={exp}/student task.max_sample_size=160000 "
        "trainer.max_updates=7 trainer.max_updates=9",
        f"hub convert {exp}/supernet_train/checkpoint_last.pt {exp}/supernet",
    ]
    # stage 5 with stage 4 taken as done: its exported subnets must exist
    r = _run("--teacher", str(hubert), "--exp-dir", str(exp), "--stage", "5", cwd=tmp_path, env=env)
    assert r.returncode == 1 and "stage 4's output" in r.stderr and "is missing" in r.stderr, r.stderr
    for name in TINY_SUBNETS:
        (exp / "subnets" / name).mkdir(parents=True)
        (exp / "subnets" / name / "model.safetensors").write_text(name)
    for f in ("subnets.txt", "subnets.json", "teacher.txt", "teacher.json"):
        (exp / f).write_text("table")
    n = len(calls.read_text().splitlines())
    r = _run("--teacher", str(hubert), "--exp-dir", str(exp), "--stage", "5", "--tasks", "ks pr", cwd=tmp_path,
             env=env)
    assert r.returncode == 0, r.stderr
    runs = [c for c in calls.read_text().splitlines()[n:] if c.startswith("downstream -m train")]
    upstreams = sorted(re.search(r"-u (\S+)", c).group(1) + " " + re.search(r"-k (\S+)", c).group(1) for c in runs)
    expected = [f"teacher {exp}/teacher"] + [f"lh-{s} {exp}/subnets/{s}" for s in TINY_SUBNETS]
    assert upstreams == sorted(f"{u}" for u in expected for _ in ("ks", "pr"))
    assert (exp / "superb" / "report" / "report.md").is_file() and (exp / ".stage5.done").is_file()


@pytest.mark.slow
def test_stages_1_to_4_for_real_on_the_example(tmp_path: Path) -> None:
    from speechssl import hub
    from speechssl.upstream.lighthubert.example import write_example

    cfg = write_example(tmp_path / "data")
    (tmp_path / "eval").mkdir()
    args = ["--teacher", cfg.teacher, "--data-dir", str(tmp_path / "data"), "--eval-data", str(tmp_path / "eval"),
            "--exp-dir", str(tmp_path / "exp"), "--stage", "1", "--stop-stage", "4", "--repeats", "1",
            "--subnets", "min l2=embed=128,heads=2,ffn=4,layers=2", "--", "trainer.max_updates=2",
            "trainer.schedule.warmup_updates=1", "trainer.max_tokens=32000", "trainer.validate_every_updates=0",
            "trainer.save_every_updates=0"]
    r = _run(*args, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    exp = tmp_path / "exp"
    supernet = hub.load(exp / "supernet")
    for name, spec in (("min", "min"), ("l2", "embed=128,heads=2,ffn=4,layers=2")):
        sub = hub.load(exp / "subnets" / name)
        assert sub.config.is_extracted and sub.subnet == supernet.parse_subnet(spec)
    table = json.loads((exp / "subnets.json").read_text())["subnets"]
    assert [row["name"] for row in table] == ["min", "embed=128,heads=2,ffn=4,layers=2", "supernet"]
    assert all(row["forward_ms"] > 0 for row in table[:2])
    assert json.loads((exp / "teacher.json").read_text())["subnets"][0]["name"] == "model"
    assert "subnets:" in (exp / "subnets.txt").read_text()
    assert sorted(p.name for p in exp.glob(".stage*.done")) == [f".stage{n}.done" for n in (1, 2, 3, 4)]


def test_every_speechssl_flag_exists() -> None:
    from tests.recipes.test_recipes import SPEECHSSL, _speechssl_commands

    helps: dict[tuple[str, ...], str] = {}
    commands = _speechssl_commands(RECIPE)
    assert {c[0] for c in commands} >= {"corpus", "hub", "pretrain"}
    for words in commands:
        verb = tuple(words[:2]) if words[0] in ("corpus", "hub") else (words[0],)
        if verb not in helps:
            r = subprocess.run([*SPEECHSSL, *verb, "--help"], capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
            helps[verb] = r.stdout
        for flag in (w.split("=", 1)[0] for w in words if w.startswith("--")):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", helps[verb]), f"speechssl {verb}: no {flag}"
