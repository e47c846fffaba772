"""The recipe scripts: option parsing, --help, the speechssl flags they pass, and (slow) the
quickstart end to end on the tiny preset."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPES = {"hubert": ROOT / "recipes/hubert/run.sh", "quickstart": ROOT / "recipes/quickstart/run.sh"}
SPEECHSSL = [sys.executable, "-m", "speechssl.cli"]


def _bash(script: Path, *args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    # one thread per process: test workers share the machine, and oversubscribed torch threads crawl
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(["bash", str(script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_help_lists_the_stages(name: str, tmp_path: Path) -> None:
    r = _bash(RECIPES[name], "--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    stages = re.findall(r"^\s+(\d)\s+\w", r.stdout, flags=re.M)
    expected = [str(n) for n in range(10 if name == "hubert" else 5)]
    assert stages == expected, r.stdout
    assert "--stage" in r.stdout and "--stop-stage" in r.stdout
    assert not (tmp_path / "exp").exists()  # --help writes nothing


@pytest.mark.parametrize("name", sorted(RECIPES))
@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unknown option '--bogus'"),
    (["--stage", "x"], "--stage must be a non-negative integer"),
    (["--nj", "0"], "--nj must be at least 1"),
])
def test_bad_options_fail_with_a_message(name: str, args: list[str], message: str, tmp_path: Path) -> None:
    r = _bash(RECIPES[name], *args, cwd=tmp_path)
    assert r.returncode == 1
    assert message in r.stderr
    assert not (tmp_path / "exp").exists()


def test_hubert_checks_preset_and_data_dir(tmp_path: Path) -> None:
    r = _bash(RECIPES["hubert"], "--preset", "huge", cwd=tmp_path)
    assert r.returncode == 1 and "--preset must be tiny or base" in r.stderr
    r = _bash(RECIPES["hubert"], "--data-dir", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert r.returncode == 1 and "must hold train.tsv and valid.tsv" in r.stderr
    r = _bash(RECIPES["hubert"], "--corpus-preset", "huge", cwd=tmp_path)
    assert r.returncode == 1 and "--corpus-preset must be tiny, small or base, got 'huge'" in r.stderr
    r = _bash(RECIPES["hubert"], "--", "trainer.max_updates=5", "oops", cwd=tmp_path)
    assert r.returncode == 1 and "overrides after -- must be KEY=VALUE or iter1:/iter2:KEY=VALUE, got 'oops'" in r.stderr
    r = _bash(RECIPES["hubert"], "--corpus-seed", "-1", cwd=tmp_path)
    assert r.returncode == 1 and "--corpus-seed must be a non-negative integer, got '-1'" in r.stderr
    r = _bash(RECIPES["hubert"], "--", "iter3:trainer.max_updates=5", cwd=tmp_path)
    assert r.returncode == 1 and "got 'iter3:trainer.max_updates=5'" in r.stderr
    assert not (tmp_path / "exp").exists()


def test_hubert_honours_the_stage_range(tmp_path: Path) -> None:
    """Stages before --stage are taken as done (here with their outputs), those after --stop-stage
    are not run; log lines carry a timestamp and file:line."""
    env, calls = _fake_speechssl(tmp_path)
    exp = tmp_path / "exp"
    r = subprocess.run(["bash", str(RECIPES["hubert"]), "--exp-dir", str(exp), "--stop-stage", "1"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["bash", str(RECIPES["hubert"]), "--exp-dir", str(exp), "--stage", "2", "--stop-stage", "3"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert [c.split(" --")[0] for c in calls.read_text().splitlines()] == \
        ["corpus synth"] + ["features dump"] * 3 + ["kmeans fit"] + ["dump-labels"] * 3
    assert sorted(p.name for p in exp.glob(".stage*")) == [f".stage{n}.done" for n in range(4)]
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(hubert/run\.sh:\d+\) ", r.stderr, flags=re.M)


def _fake_speechssl(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose ``speechssl`` appends its arguments to the returned file and writes
    small stand-ins for its outputs (tests/recipes/fake_speechssl.sh)."""
    from tests.recipes.test_stages import fake_env

    return fake_env(tmp_path)


def test_hubert_overrides_for_one_iteration(tmp_path: Path) -> None:
    """Overrides after -- reach both pretraining runs; iter1:/iter2: ones only their own."""
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "valid"):
        (data / f"{split}.tsv").write_text(".\n")
    env, calls = _fake_speechssl(tmp_path)
    r = subprocess.run(["bash", str(RECIPES["hubert"]), "--data-dir", str(data), "--exp-dir", str(tmp_path / "exp"),
                        "--stop-stage", "8", "--", "trainer.optim.lr=1e-3",
                        "iter1:trainer.max_updates=7", "iter2:trainer.max_updates=9"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    first, second = [c for c in calls.read_text().splitlines() if c.startswith("pretrain ")]
    assert first.startswith("pretrain ") and "iter1.yaml" in first and "iter2.yaml" in second
    assert first.endswith("trainer.optim.lr=1e-3 trainer.max_updates=7")
    assert second.endswith("trainer.optim.lr=1e-3 trainer.max_updates=9")


def test_hubert_corpus_preset_and_seed_reach_the_synthesizer(tmp_path: Path) -> None:
    env, calls = _fake_speechssl(tmp_path)
    for args, expected in ([[], "--preset tiny --seed 0"],
                           [["--corpus-preset", "small", "--corpus-seed", "3"], "--preset small --seed 3"]):
        exp = tmp_path / f"exp{len(args)}"
        r = subprocess.run(["bash", str(RECIPES["hubert"]), "--exp-dir", str(exp), "--stop-stage", "0", *args],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert calls.read_text().splitlines()[-1] == f"corpus synth {expected} --out {exp}/corpus"


def _speechssl_commands(script: Path) -> list[list[str]]:
    """Every ``speechssl ...`` command line of a recipe (continuations joined), as words."""
    text = re.sub(r"\\\n\s*", " ", script.read_text())
    commands = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        # `pretrain ...` is the recipes' wrapper of `speechssl pretrain` (torchrun with --ngpu)
        m = re.match(r"(?:run_shards\s+)?(?:speechssl\s+(.*)|(pretrain\s+--.*))", line)
        if not m:
            continue
        body = m.group(1) or m.group(2)
        words = shlex.split(re.sub(r"[<>|]\s*\S+|\|\|.*|&&.*", "", body), posix=True)
        commands.append([w for w in words if w not in ("-q", "-v")])
    return commands


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_speechssl_flag_exists(name: str) -> None:
    commands = _speechssl_commands(RECIPES[name])
    assert commands, "no speechssl command found"
    helps: dict[tuple[str, ...], str] = {}
    for words in commands:
        verb = [words[0]]
        if len(words) > 1 and not words[1].startswith("-") and words[0] in ("corpus", "features", "kmeans",
                                                                            "cluster", "hub", "downstream"):
            verb.append(words[1])
        key = tuple(verb)
        if key not in helps:
            r = subprocess.run([*SPEECHSSL, *verb, "--help"], capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, f"speechssl {' '.join(verb)} --help failed: {r.stderr}"
            helps[key] = r.stdout
        flags = [w.split("=", 1)[0] for w in words if w.startswith("-") and not w.startswith("-$")]
        if "features" in verb:  # run_shards adds them
            flags += ["--shard", "--nshard"]
        for flag in flags:
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", helps[key]), \
                f"{script_name(name)}: 'speechssl {' '.join(verb)}' has no option {flag}"


def script_name(name: str) -> str:
    return str(RECIPES[name].relative_to(ROOT))


def test_downstream_confs_are_valid_runner_configs() -> None:
    from speechssl.downstream.runner import resolve_configs

    for task in ("ks", "sid", "pr"):
        conf = ROOT / "recipes/quickstart/conf" / f"{task}.yaml"
        run, _, trainer, _ = resolve_configs(config_file=conf, flags={"task": task, "upstream": "fbank"})
        assert run.task == task and trainer.max_updates > 0


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path: Path) -> None:
    """The README's main job on the tiny preset: label metrics, the model, the downstream report."""
    exp = tmp_path / "quickstart"
    r = _bash(RECIPES["quickstart"], "--exp-dir", str(exp), cwd=ROOT, timeout=3600)
    assert r.returncode == 0, r.stderr[-5000:]
    table = json.loads((exp / "hubert/label_metrics.json").read_text())
    it1, it2 = table["results"]
    assert (it1["label_rate"], it2["label_rate"]) == (100, 50)
    # the acceptance criterion: iteration-2 labels carry more phone information
    assert it2["pnmi"] > it1["pnmi"], table
    assert (exp / "models/hubert-tiny-iter2/model.safetensors").is_file()
    report = (exp / "report/report.md").read_text()
    for task in ("ks", "sid", "pr"):
        for up in ("fbank", "hubert-tiny-iter2"):
            result = json.loads((exp / f"downstream/{task}_{up}/result.json").read_text())
            assert result["task"] == task and result["upstream"]["name"] == up
    assert "hubert-tiny-iter2" in report and "fbank" in report
    # a rerun skips every finished stage (stage 0, the install, runs every time)
    r = _bash(RECIPES["quickstart"], "--exp-dir", str(exp), cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-5000:]
    assert re.findall(r"Stage (\d): skipped \(up to date", r.stderr) == ["1", "2", "3", "4"]
