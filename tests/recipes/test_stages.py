"""recipes/lib.sh: parse_options (Kaldi's utils/parse_options.sh), and stages that mean what they
say (Kaldi/ESPnet): a fake three-stage recipe exercises the rules, and the real recipes run with
a fake ``speechssl`` (tests/recipes/fake_speechssl.sh) that writes small outputs."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "recipes/lib.sh"
FAKE = ROOT / "tests/recipes/fake_speechssl.sh"

# A recipe in the layout of the real ones: three stages, each writing one file from the previous.
TOY = r'''#!/usr/bin/env bash
# A toy recipe.
#
#   bash toy.sh [--stage N] [--stop-stage M] [--a A] [--b-value B] [--item X ...]
#
# Stages: 1 writes one.txt (option a), 2 two.txt from it (option b_value), 3 three.txt.
set -euo pipefail
root=__ROOT__
source "$root/recipes/lib.sh"

stage=1
stop_stage=3
exp_dir=exp
a=1
b_value="x y"
item=()
fail_in=
option_alias old-a a
parse_options "$@"
check_uint stage stop_stage
echo "args: a=$a b_value=$b_value item=${item[*]+"${item[*]}"} extra=${extra_args[*]+"${extra_args[*]}"}"
mkdir -p "$exp_dir"

if run_stage 1 --opt a --out "$exp_dir/one.txt"; then
  clear_outputs "$exp_dir/one.txt"
  echo "ran 1 ($stage_mode, $stage_why)"
  [ "$fail_in" = 1 ] && exit 3
  echo "a=$a" > "$exp_dir/one.txt"
  done_stage 1
fi
if run_stage 2 --opt b_value --in "$exp_dir/one.txt" --out "$exp_dir/two.txt"; then
  echo "ran 2 ($stage_mode, $stage_why)"
  [ "$fail_in" = 2 ] && { echo partial > "$exp_dir/two.part"; exit 3; }
  [ "$fail_in" = empty ] && { : > "$exp_dir/two.txt"; done_stage 2; }
  { cat "$exp_dir/one.txt"; echo "b=$b_value"; } > "$exp_dir/two.txt"
  done_stage 2
fi
if run_stage 3 --in "$exp_dir/two.txt" --out "$exp_dir/three.txt"; then
  echo "ran 3 ($stage_mode, $stage_why)"
  cp "$exp_dir/two.txt" "$exp_dir/three.txt"
  done_stage 3
fi
'''


@pytest.fixture()
def toy(tmp_path: Path):
    script = tmp_path / "toy.sh"
    script.write_text(TOY.replace("__ROOT__", str(ROOT)))

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(script), *args], cwd=tmp_path, capture_output=True, text=True,
                              timeout=60, env=dict(os.environ, **(env or {})))
    return run


def _ran(r: subprocess.CompletedProcess) -> list[str]:
    return re.findall(r"^ran (\d)", r.stdout, flags=re.M)


# ---------------------------------------------------------------------------------------------
# parse_options

@pytest.mark.parametrize("args, expected", [
    ([], "a=1 b_value=x y item= extra="),
    (["--a", "7"], "a=7 b_value=x y item= extra="),
    (["--a=7"], "a=7 b_value=x y item= extra="),
    (["--b-value", "z"], "a=1 b_value=z item= extra="),
    (["--b_value", "z"], "a=1 b_value=z item= extra="),
    (["--b-value="], "a=1 b_value= item= extra="),
    (["--item", "p", "--item", "q r"], "a=1 b_value=x y item=p q r extra="),
    (["--old-a", "5"], "a=5 b_value=x y item= extra="),
    (["--a", "2", "--", "k=v", "--not-an-option"], "a=2 b_value=x y item= extra=k=v --not-an-option"),
])
def test_parse_options_sets_the_named_variables(toy, args: list[str], expected: str) -> None:
    r = toy("--stop-stage", "0", *args)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == f"args: {expected}"


@pytest.mark.parametrize("args, message", [
    (["--bogus", "1"], "unknown option '--bogus' (see --help)"),
    (["--root", "/"], "unknown option '--root'"),        # set before lib.sh: not an option
    (["--stage_start", "1"], "unknown option '--stage_start'"),  # lib.sh's own variable
    (["--a"], "option '--a' needs a value"),
    (["positional"], "unknown argument 'positional'"),
    (["--stage", "x"], "--stage must be a non-negative integer, got 'x'"),
])
def test_parse_options_refuses_what_it_does_not_know(toy, args: list[str], message: str, tmp_path: Path) -> None:
    r = toy(*args)
    assert r.returncode == 1 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1  # one line, no trace
    assert not (tmp_path / "exp").exists()


def test_help_prints_the_header_and_the_defaults(toy, tmp_path: Path) -> None:
    r = toy("--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("A toy recipe.\n")
    for line in ("  --a 1", '  --b-value "x y"', "  --item (none)  (repeatable)", "  --stage 1",
                 "  --stop-stage 3", "  --exp-dir exp", "  --old-a is --a"):
        assert line in r.stdout.splitlines(), r.stdout
    assert "$" not in r.stdout and "set -euo" not in r.stdout
    assert not (tmp_path / "exp").exists()


# ---------------------------------------------------------------------------------------------
# stages

def test_a_rerun_skips_up_to_date_stages_and_keeps_their_times(toy, tmp_path: Path) -> None:
    r = toy()
    assert r.returncode == 0 and _ran(r) == ["1", "2", "3"], r.stderr
    assert "ran 1 (fresh, first)" in r.stdout
    marker = (tmp_path / "exp/.stage2.done").read_text().splitlines()
    assert marker[0].startswith("seconds\t") and marker[1].startswith("finished\t")
    assert "opt\tb_value\tx y" in marker
    assert any(line.startswith("in\t<exp>/one.txt\tsha256:") for line in marker)
    again = toy()
    assert again.returncode == 0 and _ran(again) == []
    assert re.findall(r"Stage (\d): skipped \(up to date; done in \d+ s at ", again.stderr) == ["1", "2", "3"]
    assert "done in" not in again.stderr.replace("skipped (up to date; done in", "")


def test_a_changed_option_redoes_its_stage_and_the_later_ones(toy, tmp_path: Path) -> None:
    assert toy().returncode == 0
    r = toy("--b-value", "z")
    assert r.returncode == 0, r.stderr
    assert _ran(r) == ["2", "3"]
    assert "Stage 1: skipped (up to date" in r.stderr
    assert "Stage 2: b_value changed x y -> z, redoing stages 2-3" in r.stderr
    assert "ran 3 (fresh, after)" in r.stdout
    assert (tmp_path / "exp/three.txt").read_text() == "a=1\nb=z\n"
    # an earlier option: everything from its stage on
    r = toy("--a", "4")
    assert _ran(r) == ["1", "2", "3"] and "Stage 1: a changed 1 -> 4, redoing stages 1-3" in r.stderr
    assert (tmp_path / "exp/three.txt").read_text() == "a=4\nb=x y\n"


def test_a_changed_input_redoes_the_stage_that_reads_it(toy, tmp_path: Path) -> None:
    assert toy().returncode == 0
    (tmp_path / "exp/one.txt").write_text("a=edited\n")
    r = toy()
    assert _ran(r) == ["2", "3"]
    assert "Stage 2: input <exp>/one.txt changed, redoing stages 2-3" in r.stderr


def test_an_explicit_stage_is_redone_even_when_up_to_date(toy, tmp_path: Path) -> None:
    assert toy().returncode == 0
    r = toy("--stage", "2", "--stop-stage", "2")
    assert r.returncode == 0 and _ran(r) == ["2"]
    assert re.search(r"Stage 2: --stage 2 given \(it was done at \S+\), redoing stage 2$", r.stderr, flags=re.M)
    assert "ran 2 (fresh, forced)" in r.stdout
    # stage 2 made the same bytes again: stage 3 (its input digested by content) stays up to date
    r = toy()
    assert _ran(r) == [] and "Stage 3: skipped (up to date" in r.stderr
    # a calling recipe that continues a range does not force its --stage
    r = toy("--stage", "2", env={"SPEECHSSL_RECIPE_RESUME": "1"})
    assert _ran(r) == [] and "Stage 2: skipped (up to date" in r.stderr


def test_stages_before_stage_are_taken_as_done_and_must_have_their_outputs(toy, tmp_path: Path) -> None:
    r = toy("--stage", "2")
    assert r.returncode == 1 and _ran(r) == []
    assert ("error: stage 1's output exp/one.txt is missing (--stage 2 takes stages before 2 as done); "
            "run stage 1 first: --stage 1") in r.stderr
    assert toy().returncode == 0
    r = toy("--stage", "3", "--a", "9")  # stage 1 is taken as done, and the log says it differs
    assert r.returncode == 0 and _ran(r) == ["3"]
    assert "Stage 1: taken as done (--stage 3), although it was made with other options (a changed 1 -> 9)" in r.stderr


def test_a_stage_that_produced_nothing_leaves_no_marker(toy, tmp_path: Path) -> None:
    r = toy("--fail-in", "empty")
    assert r.returncode == 1
    assert "error: Stage 2 produced nothing at exp/two.txt (missing or empty); no marker written" in r.stderr
    assert (tmp_path / "exp/.stage1.done").is_file() and not (tmp_path / "exp/.stage2.done").exists()


def test_an_interrupted_stage_resumes_unless_its_options_changed(toy, tmp_path: Path) -> None:
    assert toy("--fail-in", "2").returncode == 3
    assert (tmp_path / "exp/.stage2.running").is_file() and not (tmp_path / "exp/.stage2.done").exists()
    r = toy()
    assert _ran(r) == ["2", "3"] and "ran 2 (resume, resume)" in r.stdout
    assert "Stage 2: resuming (an earlier run was interrupted; same options and inputs)" in r.stderr
    assert not (tmp_path / "exp/.stage2.running").exists()
    assert toy("--stage", "2", "--fail-in", "2").returncode == 3
    r = toy("--b-value", "w")
    assert "ran 2 (fresh, changed)" in r.stdout
    assert "Stage 2: b_value changed x y -> w since the interrupted run, redoing stages 2-3" in r.stderr


def test_a_deleted_marker_redoes_the_stage_and_records_its_time(toy, tmp_path: Path) -> None:
    assert toy().returncode == 0
    (tmp_path / "exp/.stage1.done").unlink()
    r = toy()
    assert _ran(r) == ["1", "2", "3"] and "ran 1 (fresh, unmarked)" in r.stdout
    assert "Stage 1: no marker exp/.stage1.done, redoing stages 1-3" in r.stderr
    assert "Stage 1: removing the earlier run's exp/one.txt" in r.stderr
    assert re.search(r"^seconds\t\d+$", (tmp_path / "exp/.stage1.done").read_text(), flags=re.M)


def test_a_marker_of_the_older_recipes_counts_as_done(toy, tmp_path: Path) -> None:
    assert toy().returncode == 0
    (tmp_path / "exp/.stage1.done").write_text("12\n")
    r = toy()
    assert _ran(r) == []
    assert "Stage 1: skipped (marked done in 12 s by an older recipe, which recorded no options" in r.stderr


def test_clear_outputs_stays_inside_the_experiment(tmp_path: Path) -> None:
    script = tmp_path / "bad.sh"
    script.write_text(f'set -euo pipefail\nroot={ROOT}\nsource "$root/recipes/lib.sh"\nstage=0\nstop_stage=0\n'
                      'exp_dir=exp\nparse_options "$@"\nmkdir -p exp\n'
                      'if run_stage 0; then clear_outputs exp/../keep; fi\n')
    (tmp_path / "keep").write_text("mine")
    r = subprocess.run(["bash", str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "is not inside the experiment directory exp" in r.stderr
    assert (tmp_path / "keep").read_text() == "mine"


# ---------------------------------------------------------------------------------------------
# the real recipes with a fake speechssl

def fake_env(tmp_path: Path, **extra: str) -> tuple[dict[str, str], Path]:
    """An environment whose ``speechssl`` is tests/recipes/fake_speechssl.sh; returns it and its call log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    link = bin_dir / "speechssl"
    if not link.exists():
        link.symlink_to(FAKE)
    calls = tmp_path / "calls.txt"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", VIRTUAL_ENV=str(tmp_path),
               FAKE_SPEECHSSL_CALLS=str(calls), **extra)
    return env, calls


def _recipe(name: str, *args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / f"recipes/{name}/run.sh"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _calls_since(calls: Path, n: int) -> list[str]:
    return calls.read_text().splitlines()[n:]


def test_hubert_readme_example_redoes_iteration_2_with_fresh_labels(tmp_path: Path) -> None:
    """`--stage 5 --layer 2 --k2 200` on a finished experiment: stages 5-9 again, k=200 labels."""
    env, calls = fake_env(tmp_path)
    exp = tmp_path / "exp"
    r = _recipe("hubert", "--exp-dir", str(exp), cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    old_labels = (exp / "labels/iter2/train.km").read_text()
    n = len(calls.read_text().splitlines())
    r = _recipe("hubert", "--exp-dir", str(exp), "--stage", "5", "--layer", "2", "--k2", "200", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "Stage 5: --stage 5 given" in r.stderr and "redoing stages 5-9" in r.stderr
    redone = [c.split(" --")[0] for c in _calls_since(calls, n)]
    assert redone == ["features dump"] * 3 + ["kmeans fit"] + ["dump-labels"] * 3 + ["pretrain", "cluster metrics"]
    new = _calls_since(calls, n)
    assert "--n-clusters 200" in new[3] and f"--out {exp}/kmeans/iter2_k200.safetensors" in new[3]
    assert all(f"--km {exp}/kmeans/iter2_k200.safetensors" in c for c in new[4:7])
    labels = (exp / "labels/iter2/train.km").read_text()
    assert labels != old_labels and "--n-clusters 200" in labels  # made by the k=200 model
    assert (exp / "iter2.prev/checkpoint_last.pt").is_file()  # the k=100 model, set aside
    assert "Stage 8: moved the earlier run's" in r.stderr
    assert "opt\tk2\t200" in (exp / ".stage6.done").read_text()
    # the same k2 without --stage: nothing to do; another k2: from stage 6 on, and it says why
    r = _recipe("hubert", "--exp-dir", str(exp), "--k2", "200", cwd=tmp_path, env=env)
    assert r.returncode == 0 and len(re.findall(r"skipped \(up to date", r.stderr)) == 10, r.stderr
    r = _recipe("hubert", "--exp-dir", str(exp), "--k2", "300", cwd=tmp_path, env=env)
    assert re.findall(r"Stage (\d): skipped \(up to date", r.stderr) == [str(i) for i in range(6)]
    assert "Stage 6: k2 changed 200 -> 300, redoing stages 6-9" in r.stderr


def test_hubert_on_a_missing_experiment(tmp_path: Path) -> None:
    env, _ = fake_env(tmp_path)
    r = _recipe("hubert", "--exp-dir", "exp", "--stage", "5", cwd=tmp_path, env=env)
    assert r.returncode == 1
    assert "error: stage 0's output exp/corpus/pretrain/train.tsv is missing" in r.stderr
    assert not list((tmp_path / "exp").glob(".stage*"))
    env, _ = fake_env(tmp_path, FAKE_SPEECHSSL_NOTHING="kmeans fit")
    r = _recipe("hubert", "--exp-dir", "exp", cwd=tmp_path, env=env)
    assert r.returncode == 1
    assert "Stage 2 produced nothing at exp/kmeans/iter1_k50.safetensors" in r.stderr
    assert sorted(p.name for p in (tmp_path / "exp").glob(".stage*.done")) == [".stage0.done", ".stage1.done"]


def test_quickstart_deleted_stage3_marker_redoes_the_downstream_runs(tmp_path: Path) -> None:
    env, calls = fake_env(tmp_path)
    exp = tmp_path / "qs"
    r = _recipe("quickstart", "--exp-dir", str(exp), "--stage", "1", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert (exp / "report/report.md").is_file()
    (exp / ".stage3.done").unlink()
    n = len(calls.read_text().splitlines())
    # (--stage 1 skips the install stage; SPEECHSSL_RECIPE_RESUME keeps it from forcing stage 1)
    r = _recipe("quickstart", "--exp-dir", str(exp), "--stage", "1", cwd=tmp_path,
                env=dict(env, SPEECHSSL_RECIPE_RESUME="1"))
    assert r.returncode == 0, r.stderr
    assert re.findall(r"Stage (\d): skipped \(up to date", r.stderr) == ["1", "2"]
    assert "Stage 3: no marker" in r.stderr and "redoing stages 3-4" in r.stderr
    verbs = sorted(" ".join(c.split()[:2]) for c in _calls_since(calls, n))
    assert verbs == ["downstream -m"] * 6 + ["downstream report"]
    assert re.search(r"^seconds\t\d+$", (exp / ".stage3.done").read_text(), flags=re.M)
    assert re.search(r"stage times \(s, of the run that made each stage\): 1=\d+ 2=\d+ 3=\d+ 4=\d+", r.stderr)


def test_superb_keeps_runs_whose_inputs_are_unchanged(tmp_path: Path) -> None:
    env, calls = fake_env(tmp_path)
    (tmp_path / "corpus/read").mkdir(parents=True)
    (tmp_path / "corpus/read/train.tsv").write_text("/\n")
    args = ["--data-dir", "corpus", "--exp-dir", "sx", "--tasks", "ks er", "--upstream", "fbank=fbank"]
    assert _recipe("superb", *args, cwd=tmp_path, env=env).returncode == 0
    r = _recipe("superb", *args, "--upstream", "m=mfcc", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "Stage 1: upstream changed fbank=fbank -> fbank=fbank m=mfcc, redoing stages 1-2" in r.stderr
    assert len(re.findall(r"result\.json is up to date, keeping it", r.stderr)) == 2
    n = len(calls.read_text().splitlines())
    # other overrides: every run again; --data (the older spelling) still works
    r = _recipe("superb", "--data", "corpus", *args[2:], "--upstream", "m=mfcc", "--", "trainer.max_updates=3",
                cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "overrides changed (none) -> trainer.max_updates=3" in r.stderr
    assert sum(c.startswith("downstream -m train") for c in _calls_since(calls, n)) == 4
    # a sweep of the older recipe (no markers, no per-run records) keeps its results; --stage 1 retrains
    for p in (tmp_path / "sx").glob(".stage*"):
        p.unlink()
    for p in (tmp_path / "sx/downstream").glob("*.inputs"):
        p.unlink()
    n = len(calls.read_text().splitlines())
    r = _recipe("superb", *args, "--upstream", "m=mfcc", "--", "trainer.max_updates=3", cwd=tmp_path, env=env)
    assert r.returncode == 0 and len(re.findall(r"keeping \S+ of an older recipe", r.stderr)) == 4, r.stderr
    assert not any(c.startswith("downstream -m train") for c in _calls_since(calls, n))
    r = _recipe("superb", *args, "--upstream", "m=mfcc", "--stage", "1", "--", "trainer.max_updates=3",
                cwd=tmp_path, env=env)
    assert r.returncode == 0 and sum(c.startswith("downstream -m train") for c in _calls_since(calls, n)) == 4


def test_no_recipe_help_shows_unexpanded_variables(tmp_path: Path) -> None:
    recipes = sorted(ROOT.glob("recipes/*/run.sh"))
    assert len(recipes) >= 6
    for script in recipes:
        r = subprocess.run(["bash", str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, (script, r.stderr)
        assert "$" not in r.stdout, (script, [line for line in r.stdout.splitlines() if "$" in line])
        assert "Options and their defaults" in r.stdout and "  --exp-dir " in r.stdout, script
        assert not list(tmp_path.iterdir()), script  # --help writes nothing


MOVABLE = r'''#!/usr/bin/env bash
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$root/recipes/lib.sh"
stage=1
stop_stage=1
exp_dir=exp
parse_options "$@"
mkdir -p "$exp_dir"
if run_stage 1 --in "$root/conf.yaml" --out "$exp_dir/one.txt"; then
  echo "ran 1 ($stage_why)"
  cp "$root/conf.yaml" "$exp_dir/one.txt"
  done_stage 1
fi
'''


def test_markers_survive_moving_the_checkout_and_follow_its_files_contents(tmp_path: Path) -> None:
    """An input inside the checkout is keyed relative to it: the same experiment run from a
    copy of the checkout elsewhere skips its finished stage, and redoes it once the copy's
    file differs."""
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "recipes").mkdir(parents=True)
    (a / "recipes/lib.sh").write_text(LIB.read_text())
    (a / "conf.yaml").write_text("lr: 1\n")
    (a / "run.sh").write_text(MOVABLE)
    exp = tmp_path / "exp"

    def run(where: Path) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(where / "run.sh"), "--exp-dir", str(exp)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)

    assert _ran(run(a)) == ["1"]
    subprocess.run(["cp", "-a", str(a), str(b)], check=True)
    r = run(b)
    assert r.returncode == 0 and _ran(r) == [], r.stdout + r.stderr
    assert "<root>/conf.yaml" in (exp / ".stage1.done").read_text()
    (b / "conf.yaml").write_text("lr: 2\n")
    r = run(b)
    assert _ran(r) == ["1"] and "conf.yaml" in r.stdout + r.stderr, r.stdout + r.stderr
