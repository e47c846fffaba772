"""Corpus builds: byte-identical whatever --jobs, resumable after a crash, a no-op when done."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import speechssl.corpus.synth as synth
from speechssl.cli import main as cli_main
from speechssl.corpus.plan import Preset, make_plan
from speechssl.corpus.synth import render_items, synthesize_corpus

# every subset, 3 + 2 speakers, ~30 utterances: a few seconds to build
MICRO = Preset("micro", 3, 2, (1, 1, 1), 0.5, 3, 1, 2, 2, 1, 1, 1, 10)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def micro_a(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("micro") / "a"
    synthesize_corpus(out, MICRO, seed=5, jobs=1, progress=False)
    return out


def test_same_seed_same_bytes_whatever_jobs(micro_a, tmp_path):
    b = tmp_path / "b"
    synthesize_corpus(b, MICRO, seed=5, jobs=2, progress=False)
    fa, fb = _files(micro_a), _files(b)
    assert fa.keys() == fb.keys()
    assert [k for k in fa if fa[k] != fb[k]] == []
    assert not any(k.startswith(".cache") for k in fa)
    card = json.loads(fa["corpus.json"])
    assert card["preset"] == "micro" and card["utterances"] == len(make_plan(MICRO, 5).items)


def test_other_seed_other_corpus(micro_a, tmp_path):
    c = tmp_path / "c"
    synthesize_corpus(c, MICRO, seed=6, jobs=1, progress=False)
    assert (c / "read" / "train.wrd").read_bytes() != (micro_a / "read" / "train.wrd").read_bytes()


def test_session_variability_changes_the_audio_not_the_labels(micro_a, tmp_path):
    """Session variability (the default; micro_a has it): recorded in the card, every spoken
    utterance sounds different from the build without it, every text label is the same, and the
    build is as reproducible either way."""
    out = tmp_path / "plain"
    synthesize_corpus(out, MICRO, seed=5, jobs=2, progress=False, sessions=False)
    fa, fs = _files(out), _files(micro_a)
    assert fa.keys() == fs.keys()
    assert json.loads(fs["corpus.json"])["session_variability"] is True
    assert json.loads(fa["corpus.json"])["session_variability"] is False
    assert "session variability: on" in fs["README.md"].decode()
    assert "session variability: off" in fa["README.md"].decode()
    wavs = [k for k in fa if k.endswith(".wav")]
    differing = {k for k in wavs if fa[k] != fs[k]}
    noise_only = {k for k in wavs if Path(k).name.startswith("noise_")}
    assert differing == set(wavs) - noise_only and differing
    for k in fa:
        if k.endswith((".wrd", ".ltr", ".spk", ".intent", ".slot", ".kw", ".style", ".topic", "trials.txt")):
            assert fa[k] == fs[k], k
    again = tmp_path / "again"
    synthesize_corpus(again, MICRO, seed=5, jobs=1, progress=False, sessions=False)
    assert _files(again) == fa


def test_items_match_the_full_build_whatever_their_neighbours(tiny_corpus, tmp_path):
    """Rendering a few items alone, in another order and process layout, gives the bytes of
    the fixture's full build: an item's audio does not depend on what was rendered before."""
    plan = make_plan("tiny", 0)
    by_kind = {}
    for it in plan.items:
        by_kind.setdefault((it.subset, it.kind), it)
    items = list(by_kind.values())[::-1]
    assert render_items(items, tmp_path, jobs=2, progress=False) == len(items)
    for it in items:
        rel = Path(it.subset) / "wav" / f"{it.uid}.wav"
        assert (tmp_path / rel).read_bytes() == (tiny_corpus / rel).read_bytes(), it.uid


def test_interrupted_build_resumes_to_identical_output(micro_a, tmp_path, monkeypatch):
    out = tmp_path / "crash"
    real_render = synth.render
    calls = {"n": 0}

    def failing_render(item, tts):
        calls["n"] += 1
        if calls["n"] == 12:
            raise RuntimeError("simulated crash")
        return real_render(item, tts)

    monkeypatch.setattr(synth, "render", failing_render)
    with pytest.raises(RuntimeError, match="simulated crash"):
        synthesize_corpus(out, MICRO, seed=5, jobs=1, progress=False)
    assert not (out / "corpus.json").exists()
    assert not list(out.rglob("*.tsv"))  # manifests are written last
    assert not list(out.rglob("*.tmp"))  # no half-written file
    done = list(out.rglob("*.wav"))
    assert len(done) == 11
    monkeypatch.setattr(synth, "render", real_render)
    synthesize_corpus(out, MICRO, seed=5, jobs=1, progress=False)
    assert _files(out) == _files(micro_a)


def test_finished_build_is_a_noop(micro_a, monkeypatch):
    before = {p: p.stat().st_mtime_ns for p in micro_a.rglob("*")}
    monkeypatch.setattr(synth, "make_plan", lambda *a, **k: pytest.fail("a finished corpus was re-planned"))
    synthesize_corpus(micro_a, MICRO, seed=5, jobs=2, progress=False)
    assert {p: p.stat().st_mtime_ns for p in micro_a.rglob("*")} == before


def test_refuses_another_corpus(micro_a, tmp_path):
    with pytest.raises(ValueError, match="preset 'micro', seed 5 and session variability on"):
        synthesize_corpus(micro_a, MICRO, seed=6, progress=False)
    with pytest.raises(ValueError, match=r"not 'micro'/5/off"):
        synthesize_corpus(micro_a, MICRO, seed=5, progress=False, sessions=False)
    foreign = tmp_path / "foreign"
    (foreign / "read").mkdir(parents=True)
    with pytest.raises(ValueError, match="not made by this command"):
        synthesize_corpus(foreign, MICRO, seed=5, progress=False)


def test_cli(tiny_corpus, capsys):
    assert cli_main(["corpus", "synth", "--preset", "tiny", "--out", str(tiny_corpus), "--no-progress"]) == 0
    assert cli_main(["corpus", "synth", "--preset", "small", "--out", str(tiny_corpus), "--no-progress"]) == 1
    with pytest.raises(SystemExit) as exc:
        cli_main(["corpus", "synth", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "byte-identical" in out and "--no-session-variability" in out
