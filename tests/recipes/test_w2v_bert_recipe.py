"""recipes/w2v_bert/run.sh: --help, option checks, the speechssl calls of each stage (a fake
speechssl records them), and skipping finished stages."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes/w2v_bert/run.sh"


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = env or dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(["bash", str(RECIPE), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def _fake_speechssl(tmp_path: Path) -> tuple[dict[str, str], Path]:
    from tests.recipes.test_stages import fake_env

    return fake_env(tmp_path)


def test_help_lists_the_stages(tmp_path: Path) -> None:
    r = _run("--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.findall(r"^\s+(\d)\s+\w", r.stdout, flags=re.M) == ["0", "1", "2", "3"]
    assert not (tmp_path / "exp").exists()


def test_bad_options_fail_with_a_message(tmp_path: Path) -> None:
    for args, message in ((["--bogus"], "unknown option '--bogus'"), (["--preset", "huge"], "--preset must be tiny"),
                          (["--stage", "x"], "--stage must be a non-negative integer"),
                          (["--data-dir", str(tmp_path / "nowhere")], "must hold train.tsv and valid.tsv"),
                          (["--", "oops"], "must be KEY=VALUE, got 'oops'")):
        r = _run(*args, cwd=tmp_path)
        assert r.returncode == 1 and message in r.stderr, (args, r.stderr)
    assert not (tmp_path / "exp").exists()


def test_stages_call_corpus_pretrain_convert_and_skip_when_done(tmp_path: Path) -> None:
    env, calls = _fake_speechssl(tmp_path)
    exp = tmp_path / "exp"
    r = _run("--exp-dir", str(exp), "--stop-stage", "1", "--", "trainer.max_updates=7", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    lines = calls.read_text().splitlines()
    assert lines[0] == f"corpus synth --preset tiny --seed 1 --out {exp}/corpus"
    assert lines[1] == f"corpus synth --preset tiny --seed 0 --out {exp}/eval_corpus"
    assert lines[2] == (f"pretrain --method w2v_bert --preset tiny --data {exp}/corpus/pretrain "
                        f"--exp-dir {exp}/pretrain trainer.max_updates=7")
    assert (exp / "pretrain" / "checkpoint_last.pt").is_file()
    r = _run("--exp-dir", str(exp), "--stop-stage", "2", "--", "trainer.max_updates=7", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert re.findall(r"Stage (\d): skipped \(up to date", r.stderr) == ["0", "1"]
    assert calls.read_text().splitlines()[3:] == [
        f"hub convert {exp}/pretrain/checkpoint_last.pt {exp}/model",
        f"hub convert {exp}/model {exp}/model_hf --to hf"]
    assert (exp / ".stage2.done").is_file()
