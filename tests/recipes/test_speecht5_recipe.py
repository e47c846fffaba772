"""recipes/speecht5/run.sh: syntax, --help, option checks, the speechssl calls of each stage (a fake
speechssl records them and writes small outputs), skipping finished stages, and that every flag
it passes exists."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes/speecht5/run.sh"
FAKE = ROOT / "tests/recipes/fake_speechssl.sh"
SPEECHSSL = [sys.executable, "-m", "speechssl.cli"]

# the verbs tests/recipes/fake_speechssl.sh does not know, plus corpus.json for corpus synth
_EXTRA_FAKE = r'''#!/usr/bin/env bash
set -euo pipefail
opt() { local prev= a; for a in "$@"; do [ "$prev" = "$OPT" ] && { echo "$a"; return 0; }; prev=$a; done; }
case "$1 ${2:-}" in
  "text unpaired")
    echo "$*" >> "$FAKE_SPEECHSSL_CALLS"
    out=$(OPT=--out opt "$@"); mkdir -p "$out"
    for f in train.txt valid.txt unpaired.json; do echo "$*" > "$out/$f"; done ;;
  "text spm-train")
    echo "$*" >> "$FAKE_SPEECHSSL_CALLS"
    out=$(OPT=--out opt "$@"); mkdir -p "$(dirname "$out")"; echo "$*" > "$out" ;;
  "speecht5 asr"|"speecht5 tts")
    echo "$*" >> "$FAKE_SPEECHSSL_CALLS"
    out=$(OPT=--exp-dir opt "$@"); mkdir -p "$out"; echo "{\"wer\": 99.0}" > "$out/result.json" ;;
  "corpus synth")
    bash "$FAKE" "$@"
    out=$(OPT=--out opt "$@"); echo "{}" > "$out/corpus.json" ;;
  *) exec bash "$FAKE" "$@" ;;
esac
'''


def _env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "speechssl").write_text(_EXTRA_FAKE)
    (bin_dir / "speechssl").chmod(0o755)
    calls = tmp_path / "calls.txt"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", VIRTUAL_ENV=str(tmp_path),
               FAKE_SPEECHSSL_CALLS=str(calls), FAKE=str(FAKE))
    return env, calls


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = env or dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(["bash", str(RECIPE), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_syntax_and_help_lists_the_stages(tmp_path: Path) -> None:
    assert subprocess.run(["bash", "-n", str(RECIPE)], capture_output=True).returncode == 0
    r = _run("--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.findall(r"^\s+(\d)\s+\w", r.stdout, flags=re.M) == [str(n) for n in range(10)]
    assert "--stage" in r.stdout and "--stop-stage" in r.stdout and "--vocab-size" in r.stdout
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize("args, message", [
    (["--bogus", "1"], "unknown option '--bogus'"),
    (["--preset", "huge"], "--preset must be tiny"),
    (["--stage", "x"], "--stage must be a non-negative integer"),
    (["--nj", "0"], "--nj must be at least 1"),
    (["--corpus-preset", "huge"], "--corpus-preset must be tiny, small or base, got 'huge'"),
    (["--data-dir", "nowhere"], "must hold train.tsv and valid.tsv"),
    (["--upstream", "oops"], "--upstream must be NAME=SRC, got 'oops'"),
    (["--", "oops"], "must be KEY=VALUE, got 'oops'"),
])
def test_bad_options_fail_with_a_message(args: list[str], message: str, tmp_path: Path) -> None:
    r = _run(*args, cwd=tmp_path)
    assert r.returncode == 1 and message in r.stderr, (args, r.stderr)
    assert not (tmp_path / "exp").exists()


def test_data_dir_needs_a_text_corpus(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for s in ("train", "valid"):
        (data / f"{s}.tsv").write_text("/\n")
    r = _run("--data-dir", str(data), cwd=tmp_path)
    assert r.returncode == 1 and "--data-dir needs --text-corpus DIR" in r.stderr


def test_stages_call_speechssl_in_order_and_skip_when_done(tmp_path: Path) -> None:
    env, calls = _env(tmp_path)
    exp = tmp_path / "exp"
    r = _run("--exp-dir", str(exp), "--stop-stage", "6", "--vocab-size", "100", "--",
             "trainer.max_updates=7", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    lines = calls.read_text().splitlines()
    pre, ev, lab, text, mfcc = (f"{exp}/corpus/pretrain", f"{exp}/eval_corpus", f"{exp}/labels", f"{exp}/text",
                                f"{exp}/features/mfcc39")
    assert lines == [
        f"corpus synth --preset tiny --seed 1 --out {exp}/corpus",
        f"corpus synth --preset tiny --seed 0 --out {ev}",
        f"features dump --manifest-dir {pre} --split train --out {mfcc} --feature mfcc39 --shard 0 --nshard 1 "
        "--no-progress",
        f"features dump --manifest-dir {pre} --split valid --out {mfcc} --feature mfcc39 --shard 0 --nshard 1 "
        "--no-progress",
        f"kmeans fit --feat-dir {mfcc} --split train --nshard 1 --n-clusters 50 --feature mfcc39 100 Hz "
        f"--out {exp}/kmeans/k50.safetensors",
        f"dump-labels --feat-dir {mfcc} --split train --nshard 1 --km {exp}/kmeans/k50.safetensors --out {lab}",
        f"dump-labels --feat-dir {mfcc} --split valid --nshard 1 --km {exp}/kmeans/k50.safetensors --out {lab}",
        f"text unpaired {exp}/corpus --out {text} --extra 2000 --exclude {ev}",
        f"text spm-train --text {text}/train.txt --out {text}/spm.model --vocab-size 100",
        f"pretrain --method speecht5 --preset tiny --data {pre} --exp-dir {exp}/pretrain "
        f"--config {ROOT}/recipes/speecht5/conf/tiny.yaml task.label_dir={lab} task.text_dir={text} "
        f"task.spm_model={text}/spm.model trainer.max_updates=7",
        f"hub convert {exp}/pretrain/checkpoint_last.pt {exp}/model",
    ]
    # a rerun with the same options skips everything; another vocabulary redoes text and later stages
    r = _run("--exp-dir", str(exp), "--stop-stage", "6", "--vocab-size", "100", "--", "trainer.max_updates=7",
             cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert len(calls.read_text().splitlines()) == len(lines)
    assert re.findall(r"Stage (\d): skipped \(up to date", r.stderr) == [str(n) for n in range(7)]
    r = _run("--exp-dir", str(exp), "--stop-stage", "6", "--vocab-size", "120", "--", "trainer.max_updates=7",
             cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    redone = calls.read_text().splitlines()[len(lines):]
    assert [w.split()[0] + " " + w.split()[1] for w in redone] == [
        "text unpaired", "text spm-train", "pretrain --method", "hub convert"]
    # the fine-tuning stages, with the downstream sweep (stage 7) taken as done
    (exp / "superb" / "report").mkdir(parents=True)
    (exp / "superb" / "report" / "report.md").write_text("report\n")
    before = len(calls.read_text().splitlines())
    r = _run("--exp-dir", str(exp), "--stage", "8", "--vocab-size", "120", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert calls.read_text().splitlines()[before:] == [
        f"speecht5 asr --data {ev}/read --spm-model {text}/spm.model --init {exp}/model --exp-dir {exp}/asr "
        f"--preset tiny --config {ROOT}/recipes/speecht5/conf/tiny_asr.yaml",
        f"speecht5 tts --data {ev}/read --spm-model {text}/spm.model --init {exp}/model --exp-dir {exp}/tts "
        f"--preset tiny --config {ROOT}/recipes/speecht5/conf/tiny_tts.yaml --eval-split valid",
    ]
    assert (exp / ".stage8.done").is_file() and (exp / ".stage9.done").is_file()


def test_every_speechssl_flag_exists() -> None:
    text = re.sub(r"\\\n\s*", " ", RECIPE.read_text())
    commands = []
    for line in text.splitlines():
        m = re.match(r"\s*(?:speechssl\s+(.*)|(pretrain\s+--.*))", line.split(" #", 1)[0])
        if m:
            commands.append((m.group(1) or m.group(2)).split())
    assert len(commands) >= 10
    helps: dict[tuple[str, ...], str] = {}
    for words in commands:
        verb = tuple(words[:2]) if words[0] in ("corpus", "features", "kmeans", "hub", "text", "speecht5") \
            else (words[0],)
        if verb not in helps:
            r = subprocess.run([*SPEECHSSL, *verb, "--help"], capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, f"speechssl {' '.join(verb)} --help failed: {r.stderr}"
            helps[verb] = r.stdout
        for flag in (w.split("=", 1)[0] for w in words if w.startswith("--")):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", helps[verb]), (verb, flag)
