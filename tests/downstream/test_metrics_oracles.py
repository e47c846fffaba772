"""Metrics against independent implementations on a few hundred random cases each.

- WER / CER against jiwer, empty references included (all empty: the inserted tokens count),
  through ``metrics`` and through the asr task's validation and scoring path.
- DER with collars and overlap skipping against pyannote.metrics (NIST convention: the collar
  also applies where a reference segment starts at the first frame or ends at the last).
- ``parse_slots`` against a token scanner written from the definition; the sf task's pooled
  slot CER against ``metrics.slot_value_cer``.
"""
from __future__ import annotations

import numpy as np
import pytest

from speechssl.downstream import metrics as M
from speechssl.downstream.asr.task import SpeechRecognition
from speechssl.downstream.sf.task import SlotFilling

N_CASES = 300


def _sentences(rng: np.random.Generator, n: int, p_empty: float) -> list[str]:
    vocab = ["a", "b", "cat", "dog", "xyz"]
    return ["" if rng.random() < p_empty else " ".join(rng.choice(vocab, size=rng.integers(1, 7)))
            for _ in range(n)]


def _asr_task() -> SpeechRecognition:
    return object.__new__(SpeechRecognition)  # reduce_logs/score/ratio_metrics need no corpus


def _asr_validation(hyps: list[str], refs: list[str], batch: int) -> dict[str, float]:
    """What the Trainer does: per-batch num_/den_ logs summed, then Task.reduce_logs."""
    task, sums = _asr_task(), {}
    for i in range(0, len(refs), batch):
        for name, (num, den) in task.ratio_metrics(hyps[i:i + batch], refs[i:i + batch]).items():
            sums[f"num_{name}"] = sums.get(f"num_{name}", 0.0) + num
            sums[f"den_{name}"] = sums.get(f"den_{name}", 0.0) + den
    return task.reduce_logs(sums, 1.0)


def test_wer_cer_match_jiwer_everywhere() -> None:
    jiwer = pytest.importorskip("jiwer")
    rng = np.random.default_rng(0)
    for case in range(N_CASES):
        n = int(rng.integers(1, 6))
        p_empty = (0.0, 0.3, 1.0)[case % 3]             # a third with every reference empty
        refs, hyps = _sentences(rng, n, p_empty), _sentences(rng, n, 0.3)
        want_wer, want_cer = jiwer.wer(refs, hyps), jiwer.cer(refs, hyps)
        assert M.wer(hyps, refs) == pytest.approx(want_wer, abs=1e-12), (refs, hyps)
        assert M.cer(hyps, refs) == pytest.approx(want_cer, abs=1e-12), (refs, hyps)
        valid = _asr_validation(hyps, refs, batch=int(rng.integers(1, 4)))
        assert valid["wer"] == pytest.approx(want_wer, abs=1e-12) and valid["cer"] == pytest.approx(want_cer, abs=1e-12)
        task = _asr_task()
        task.references = lambda split, refs=refs: refs
        scored = task.score("test", hyps)
        assert scored["wer"] == pytest.approx(want_wer, abs=1e-12) and scored["cer"] == pytest.approx(want_cer, abs=1e-12)


def test_all_empty_references_one_definition() -> None:
    hyps, refs = ["hello", ""], ["", ""]
    assert M.wer(hyps, refs) == 1.0                     # one inserted word, not an error and not 1e12
    assert _asr_validation(hyps, refs, batch=1)["wer"] == 1.0
    task = _asr_task()
    task.references = lambda split: refs
    assert task.score("test", hyps)["wer"] == 1.0
    assert M.wer(["", ""], refs) == 0.0
    assert M.rate(3, 0) == 3.0 and M.rate(3, 6) == 0.5
    with pytest.raises(ValueError, match="counts must be >= 0"):
        M.rate(-1, 2)


def _annotation(activity: np.ndarray):
    from pyannote.core import Annotation, Segment

    ann = Annotation()
    for s in range(activity.shape[1]):
        col = np.r_[0, activity[:, s].astype(int), 0]
        starts, ends = np.nonzero(np.diff(col) == 1)[0], np.nonzero(np.diff(col) == -1)[0]
        for k, (a, b) in enumerate(zip(starts, ends)):
            ann[Segment(float(a), float(b)), f"{s}.{k}"] = f"spk{s}"  # unique track per speaker
    return ann


def test_der_matches_pyannote_with_collar_and_skip_overlap() -> None:
    pytest.importorskip("pyannote.metrics")
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    rng = np.random.default_rng(1)
    compared = 0
    for case in range(N_CASES):
        T = int(rng.integers(4, 40))
        ref = rng.random((T, int(rng.integers(1, 4)))) < rng.uniform(0.2, 0.8)
        hyp = rng.random((T, int(rng.integers(0, 4)))) < rng.uniform(0.2, 0.8)
        if case % 4 == 0:                               # segments touching both ends of the recording
            ref[0, 0] = ref[-1, 0] = True
        collar, skip = int(rng.integers(0, 4)), bool(case % 2)
        ours = M.der(ref, hyp, collar=collar, skip_overlap=skip)
        metric = DiarizationErrorRate(collar=2.0 * collar, skip_overlap=skip)
        theirs = metric(_annotation(ref), _annotation(hyp), uem=Timeline([Segment(0.0, float(T))]), detailed=True)
        assert ours["speech"] == pytest.approx(theirs["total"], abs=1e-9), case
        assert ours["miss"] == pytest.approx(theirs["missed detection"], abs=1e-9), case
        assert ours["false_alarm"] == pytest.approx(theirs["false alarm"], abs=1e-9), case
        assert ours["confusion"] == pytest.approx(theirs["confusion"], abs=1e-9), case
        if ours["speech"]:
            assert ours.der == pytest.approx(theirs["diarization error rate"], abs=1e-12), case
            compared += 1
    assert compared >= 100  # the rest have no reference speech left to score (counts compared above)


def test_der_collar_at_the_recording_edges_issue_case() -> None:
    ref, hyp = np.zeros((8, 1)), np.zeros((8, 1))
    ref[0:4], hyp[2:4] = 1, 1
    assert M.der(ref, hyp, collar=1).der == pytest.approx(0.5)   # pyannote: 0.5 (was 0.667)


def _scan_slots(text: str) -> list[tuple[str, str]]:
    """The definition, as a loop over tokens: ``B-t`` ... first later ``E-t``; resume after it."""
    toks, out, i = text.split(), [], 0
    while i < len(toks):
        if toks[i].startswith("B-") and len(toks[i]) > 2:
            kind = toks[i][2:]
            end = next((j for j in range(i + 1, len(toks)) if toks[j] == f"E-{kind}"), None)
            if end is not None:
                out.append((kind, " ".join(w for w in toks[i + 1:end] if not w.startswith(("B-", "E-")))))
                i = end + 1
                continue
        i += 1
    return out


def test_parse_slots_matches_a_token_scanner() -> None:
    rng = np.random.default_rng(2)
    tokens = ["red", "light", "on", "B-place", "E-place", "B-time", "E-time", "B-", "E-placement"]
    for _ in range(N_CASES):
        text = " ".join(rng.choice(tokens, size=int(rng.integers(0, 12))))
        assert M.parse_slots(text) == _scan_slots(text), text


def test_empty_slot_does_not_swallow_what_follows() -> None:
    assert M.parse_slots("B-place E-place red B-place light E-place") == [("place", ""), ("place", "light")]
    assert M.parse_slots("turn B-x E-x on") == [("x", "")]
    assert M.slot_type_f1(["B-place E-place red B-place light E-place"], ["B-place light E-place"]) == 1.0


def test_sf_task_slot_cer_pools_like_slot_value_cer() -> None:
    rng = np.random.default_rng(3)
    words = ["red", "light", "on", "kitchen"]
    task = object.__new__(SlotFilling)

    def tagged() -> str:
        parts = []
        for _ in range(int(rng.integers(0, 4))):
            kind = rng.choice(["place", "time"])
            value = " ".join(rng.choice(words, size=int(rng.integers(0, 3))))
            parts += [str(rng.choice(words)), f"B-{kind}", value, f"E-{kind}"]
        return " ".join(" ".join(parts).split())

    for _ in range(N_CASES):
        n = int(rng.integers(1, 5))
        refs, hyps = [tagged() for _ in range(n)], [tagged() for _ in range(n)]
        num, den = task.ratio_metrics(hyps, refs)["slot_cer"]
        if not any(M.parse_slots(r) for r in refs):
            continue
        assert M.rate(num, den) == pytest.approx(M.slot_value_cer(hyps, refs), abs=1e-12), (hyps, refs)
