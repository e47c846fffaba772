"""recipes/images/run.sh: syntax, --help, option checks, the speechssl calls of every stage (a fake
speechssl records them: tests/recipes/fake_speechssl.sh, plus `corpus images` here), skipping
finished stages, and adding a method pretraining and probing only that one.

A real tiny run (corpus, three pretrainings, 30 probes) takes minutes on two cores, far over
what a test may take, so every stage runs against the fake; each speechssl flag the recipe uses
is checked against the real CLI's --help instead."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes/images/run.sh"
FAKE = ROOT / "tests/recipes/fake_speechssl.sh"
PROBES = {"shape": "-d image_probe -o task.subset=scenes,task.factor=shape",
          "colour": "-d image_probe -o task.subset=scenes,task.factor=colour",
          "count": "-d image_probe -o task.subset=scenes,task.factor=count",
          "digits": "-d image_probe -o task.subset=digits,task.factor=digit",
          "roads": "-d image_seg -o task.subset=roads",
          "objects": "-d image_seg -o task.subset=scenes"}


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = env or dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(["bash", str(RECIPE), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _fake(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """The fake speechssl, which also writes the manifests of `corpus images`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "speechssl"
    wrapper.write_text(f"""#!/usr/bin/env bash
set -euo pipefail
if [ "${{1:-}} ${{2:-}}" = "corpus images" ]; then
  echo "$*" >> "$FAKE_SPEECHSSL_CALLS"
  prev= out=
  for a in "$@"; do [ "$prev" = --out ] && out=$a; prev=$a; done
  for sub in scenes roads digits; do
    mkdir -p "$out/$sub"
    for s in train valid test; do echo "$*" > "$out/$sub/$s.tsv"; done
  done
  exit 0
fi
exec bash {FAKE} "$@"
""")
    wrapper.chmod(0o755)
    from tests.recipes.test_stages import fake_env

    return fake_env(tmp_path)


def test_syntax_and_help(tmp_path: Path) -> None:
    assert subprocess.run(["bash", "-n", str(RECIPE)], capture_output=True).returncode == 0
    r = _run("--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.findall(r"^\s+(\d)\s+\w", r.stdout, flags=re.M) == ["0", "1", "2", "3", "4"]
    assert "--methods mae,cae,simclr" in r.stdout and "--random-init mae@tiny" in r.stdout
    assert "$" not in r.stdout
    assert not (tmp_path / "exp").exists()


def test_bad_options_fail_with_a_message(tmp_path: Path) -> None:
    for args, message in ((["--bogus"], "unknown option '--bogus'"), (["--preset", "huge"], "--preset must be tiny"),
                          (["--corpus-preset", "base"], "--corpus-preset must be tiny or small"),
                          (["--methods", "mae cae"], "--methods must be method names separated by commas"),
                          (["--probes", "shape texture"], "unknown probe 'texture'"),
                          (["--random-init", "mae"], "--random-init must be METHOD@PRESET"),
                          (["--pixels", "maybe"], "--pixels must be yes or no"),
                          (["--seeds", "1,2"], "--seeds must be non-negative integers"),
                          (["--ds-override", "oops"], "must be KEY=VALUE, got 'oops'"),
                          (["--", "oops"], "must be KEY=VALUE, got 'oops'")):
        r = _run(*args, cwd=tmp_path)
        assert r.returncode == 1 and message in r.stderr, (args, r.stderr)
    assert not (tmp_path / "exp").exists()


def test_every_stage_calls_speechssl_and_a_rerun_skips_them(tmp_path: Path) -> None:
    env, calls = _fake(tmp_path)
    exp = tmp_path / "exp"
    r = _run("--exp-dir", str(exp), "--ds-override", "trainer.max_updates=5", "--", "trainer.max_updates=7",
             cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    lines = calls.read_text().splitlines()
    # image_seg asks each model directory's hidden-state widths once (a ResNet is probed on its last layer)
    assert [line for line in lines if line.startswith("hub info")] == [f"hub info {exp}/models/{m}"
                                                                       for m in ("mae", "cae", "simclr")]
    lines = [line for line in lines if not line.startswith("hub info")]
    corpus = exp / "corpus"
    assert lines[0] == f"corpus images --preset tiny --seed 0 --out {corpus}"
    assert lines[1:4] == [f"pretrain --method {m} --preset tiny --data {corpus}/scenes --exp-dir {exp}/pretrain/{m} "
                          f"trainer.max_updates=7" for m in ("mae", "cae", "simclr")]
    assert lines[4:7] == [f"hub convert {exp}/pretrain/{m}/checkpoint_last.pt {exp}/models/{m}"
                          for m in ("mae", "cae", "simclr")]
    probes = lines[7:37]
    expected = []
    for p, args in PROBES.items():
        for name, u in (("mae", f"-u mae -k {exp}/models/mae"), ("cae", f"-u cae -k {exp}/models/cae"),
                        ("simclr", f"-u simclr -k {exp}/models/simclr"), ("pixels", "-u pixels"),
                        ("random-mae", "-u random:mae@tiny")):
            expected.append(f"downstream -m train {args} {u} --data {corpus} -p {exp}/probes/{p}/{name} -a --seed 1 "
                            f"-o trainer.max_updates=5")
    assert probes == expected
    assert lines[37:] == [f"downstream report {exp}/probes/{p} --out {exp}/report/{p}" for p in PROBES]
    report = (exp / "report" / "report.md").read_text()
    assert [m for m in re.findall(r"^## (\w+) \(", report, flags=re.M)] == list(PROBES)
    assert f"report of downstream report {exp}/probes/roads --out {exp}/report/roads" in report
    for m in ("mae", "cae", "simclr"):
        assert (exp / "pretrain" / f"{m}.inputs").is_file() and (exp / "probes" / "shape" / f"{m}.inputs").is_file()
    # a rerun with the same options does nothing
    n = len(calls.read_text().splitlines())
    r = _run("--exp-dir", str(exp), "--ds-override", "trainer.max_updates=5", "--", "trainer.max_updates=7",
             cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert re.findall(r"Stage (\d): skipped \(up to date", r.stderr) == ["0", "1", "2", "3", "4"]
    assert len(calls.read_text().splitlines()) == n


def test_adding_a_method_pretrains_and_probes_only_it(tmp_path: Path) -> None:
    env, calls = _fake(tmp_path)
    exp = tmp_path / "exp"
    base = ("--exp-dir", str(exp), "--probes", "shape roads", "--seeds", "1 2", "--random-init", "none")
    r = _run(*base, "--methods", "mae", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    first = calls.read_text().splitlines()
    assert sum(line.startswith("downstream -m train") for line in first) == 2 * 2 * 2  # probes x (mae, pixels) x seeds
    assert f"-p {exp}/probes/shape/mae_seed2 -a --seed 2" in "\n".join(first)
    r = _run(*base, "--methods", "mae,mixedae", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    new = calls.read_text().splitlines()[len(first):]
    assert [line for line in new if line.startswith("pretrain")] == [
        f"pretrain --method mixedae --preset tiny --data {exp}/corpus/scenes --exp-dir {exp}/pretrain/mixedae"]
    trained = [line for line in new if line.startswith("downstream -m train")]
    assert len(trained) == 2 * 2 and all("-u mixedae -k" in line for line in trained)
    assert "mae: " in r.stderr and "is up to date, keeping it" in r.stderr
    assert sum(line.startswith("downstream report") for line in new) == 2
    # --stage 3 probes everything again
    n = len(calls.read_text().splitlines())
    r = _run(*base, "--methods", "mae,mixedae", "--stage", "3", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert sum(line.startswith("downstream -m train") for line in calls.read_text().splitlines()[n:]) == 2 * 3 * 2


def test_pixels_no_leaves_out_the_pixel_baseline(tmp_path: Path) -> None:
    env, calls = _fake(tmp_path)
    exp = tmp_path / "exp"
    r = _run("--exp-dir", str(exp), "--methods", "simclr", "--probes", "shape", "--seeds", "1 2", "--random-init", "none",
             "--pixels", "no", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    trained = [line for line in calls.read_text().splitlines() if line.startswith("downstream -m train")]
    assert len(trained) == 2 and all("-u simclr -k" in line for line in trained)
    report = (exp / "report" / "report.md").read_text()
    assert report.startswith("# Image probes: simclr (tiny)\n")


def test_a_resnet_upstream_is_segmented_on_its_last_layer(tmp_path: Path) -> None:
    """The fake's `hub info` of simclr's model directory reports ResNet widths: its image_seg runs get -l -1."""
    env, calls = _fake(tmp_path)
    wrapper = tmp_path / "bin" / "speechssl"
    text = wrapper.read_text().replace('exec bash', """if [ "$1 $2" = "hub info" ]; then
  echo "$*" >> "$FAKE_SPEECHSSL_CALLS"
  case "$3" in
    *simclr) echo "hidden states:     [16, 16, 32, 64, 128]" ;;
    *) echo "hidden states:     [64, 64, 64]" ;;
  esac
  exit 0
fi
exec bash""")
    wrapper.write_text(text)
    exp = tmp_path / "exp"
    r = _run("--exp-dir", str(exp), "--probes", "shape roads", "--random-init", "none", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    runs = [line for line in calls.read_text().splitlines() if line.startswith("downstream -m train")]
    with_l = [line for line in runs if " -l -1 " in line]
    assert with_l == [f"downstream -m train -d image_seg -o task.subset=roads -l -1 -u simclr -k {exp}/models/simclr "
                      f"--data {exp}/corpus -p {exp}/probes/roads/simclr -a --seed 1"]
    assert "simclr: hidden states of widths [16, 16, 32, 64, 128] cannot be summed" in r.stderr


@pytest.mark.parametrize("verb, flags", [
    (["corpus", "images"], ["--preset", "--seed", "--out"]),
    (["pretrain"], ["--method", "--preset", "--data", "--exp-dir"]),
    (["downstream"], ["-m", "-d", "-u", "-k", "--data", "-p", "-a", "--seed", "-o", "-l"]),
    (["hub", "info"], []),
    (["downstream", "report"], ["--out"]),
])
def test_the_flags_the_recipe_uses_exist(verb: list[str], flags: list[str]) -> None:
    text = RECIPE.read_text()
    assert f"speechssl {' '.join(verb)} " in text
    r = subprocess.run([sys.executable, "-m", "speechssl.cli", *verb, "--help"], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    for flag in flags:
        assert re.search(rf"(^|[\s\[,]){re.escape(flag)}([\s,\]=]|$)", r.stdout), (verb, flag)
