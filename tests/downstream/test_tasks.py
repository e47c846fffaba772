"""Each task's data adapter on the tiny corpus, and the model the Trainer sees."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from speechssl.downstream.cache import FeatureCache
from speechssl.downstream.task import RunContext
from speechssl.downstream.upstreams import load_upstream
from speechssl.registry import get_downstream


@pytest.fixture(scope="module")
def fbank():
    return load_upstream("fbank")


def _task(name, corpus, tmp_path, upstream, **cfg_overrides):
    from speechssl.config import merge

    spec = get_downstream(name)
    cfg = merge(spec.config_cls(), cfg_overrides) if cfg_overrides else spec.config_cls()
    ctx = RunContext(upstream=upstream, data_dir=Path(corpus), cache=FeatureCache(tmp_path / "cache"),
                     work_dir=tmp_path / "derived")
    return spec.task_cls(cfg, ctx)


def test_registry_lists_all_ten_tasks():
    from speechssl.registry import list_downstreams

    assert set(list_downstreams()) >= {"ks", "sid", "asv", "ic", "sf", "pr", "asr", "qbe", "sd", "er"}
    for name in ("ks", "sid", "asv", "ic", "sf", "pr", "asr", "qbe", "sd", "er"):
        spec = get_downstream(name)
        assert spec.name == name and spec.description and spec.task_cls.name == name


@pytest.mark.parametrize("name,n_classes", [("ks", [12]), ("sid", [10]), ("er", [4]), ("ic", None)])
def test_classification_adapters(name, n_classes, tiny_corpus, tmp_path, fbank):
    task = _task(name, tiny_corpus, tmp_path, fbank)
    if n_classes:
        assert [len(c) for c in task.classes] == n_classes
    else:
        assert len(task.classes) == 3 and all(len(c) > 1 for c in task.classes)
    for split in ("train", "valid", "test"):
        data = task.split(split)
        assert len(data.targets) == len(data.manifest) > 0
        assert all(len(t) == len(task.classes) for t in data.targets)
        assert all(0 <= i < len(c) for t in data.targets for i, c in zip(t, task.classes))
    if name == "ks":
        assert set(task.classes[0]) >= {"yes", "no", "_unknown_", "_silence_"}
        kw = (Path(tiny_corpus) / "keywords" / "test.kw").read_text().split()
        assert [task.classes[0][t[0]] for t in task.split("test").targets] == kw


def test_evaluation_labels_missing_from_training_are_warned_about(tiny_corpus, tmp_path, fbank, caplog):
    commands = Path(tiny_corpus) / "commands"
    train = set((commands / "train.intent").read_text().split())
    test = (commands / "test.intent").read_text().split()
    unseen = sum(t not in train for t in test)
    assert unseen > 0  # the tiny corpus's 4 test commands are intents the training split lacks

    ic = _task("ic", tiny_corpus, tmp_path, fbank)
    with caplog.at_level("WARNING", logger="speechssl.downstream.classification"):
        ic.split("test")
    assert f"ic: {unseen} of {len(test)} 'test' utterances have a label (action|object|location)" in caplog.text

    caplog.clear()
    ks = _task("ks", tiny_corpus, tmp_path / "ks", fbank)
    with caplog.at_level("WARNING", logger="speechssl.downstream.classification"):
        ks.split("test")
    assert "utterances have a label" not in caplog.text


def test_ctc_adapters(tiny_corpus, tmp_path, fbank):
    pr = _task("pr", tiny_corpus, tmp_path, fbank)
    phn = (Path(tiny_corpus) / "read" / "valid.phn").read_text().splitlines()
    assert pr.vocab[0] == "<blank>" and "sil" in pr.vocab
    assert pr.references("valid") == [" ".join(r.split()) for r in phn]
    asr = _task("asr", tiny_corpus, tmp_path, fbank)
    wrd = (Path(tiny_corpus) / "read" / "test.wrd").read_text().splitlines()
    assert asr.references("test") == wrd and "|" in asr.vocab
    sf = _task("sf", tiny_corpus, tmp_path, fbank)
    refs = sf.references("train")
    words = (Path(tiny_corpus) / "commands" / "train.wrd").read_text().splitlines()
    assert [" ".join(w for w in r.split() if not w[:2] in ("B-", "E-")) for r in refs] == words
    assert any("B-object" in r for r in refs) and {"B-time", "E-time"} <= set(sf.vocab)
    # every reference parses back into its slots
    from speechssl.downstream import metrics
    assert metrics.slot_type_f1(refs, refs) == 1.0


def test_ctc_refuses_an_upstream_too_slow_for_its_targets(tiny_corpus, tmp_path, fbank, caplog):
    """CTC needs a frame per token plus a blank between repeats; ctc_loss(zero_infinity=True)
    would give shorter utterances zero loss and zero gradient without a word."""
    pr = _task("pr", tiny_corpus, tmp_path, fbank)
    targets = pr.split("valid").targets
    need = [len(t) + sum(a == b for a, b in zip(t, t[1:])) for t in targets]
    pr._check_feasible("valid", need, 160)                       # exactly enough: fine
    with caplog.at_level("WARNING"):
        pr._check_feasible("valid", [need[0] - 1] + need[1:], 160)   # one short: a warning
    assert "1 of 10 utterances have fewer fbank frames" in caplog.text
    with pytest.raises(ValueError, match=r"10 of 10 utterances have fewer fbank frames \(6.25 per second\).*"
                                         r"CTC cannot train on this upstream's frame rate"):
        pr._check_feasible("valid", [n // 3 for n in need], 2560)
    # the check runs when a split's dataset is first built (fbank at 100 Hz passes)
    assert len(pr.dataset("valid")) == len(targets)


def test_asv_and_qbe_adapters(tiny_corpus, tmp_path, fbank):
    asv = _task("asv", tiny_corpus, tmp_path, fbank)
    test = asv.split("test")
    trials = test.extra["trials"]
    assert len(trials) > 0 and {lab for lab, _, _ in trials} == {0, 1}
    spk = (Path(tiny_corpus) / "verification" / "test.spk").read_text().split()
    assert all((spk[a] == spk[b]) == bool(lab) for lab, a, b in trials)
    assert not set(spk) & set(asv.speakers)           # verification speakers are held out
    qbe = _task("qbe", tiny_corpus, tmp_path, fbank)
    dev, test_rows = qbe.split("valid").extra["rows"], qbe.split("test").extra["rows"]
    n_queries = len((Path(tiny_corpus) / "qbe" / "queries.tsv").read_text().splitlines()) - 1
    assert sorted(dev + test_rows) == list(range(n_queries)) and not set(dev) & set(test_rows)
    terms = qbe.split("valid").targets
    assert not {terms[i][1] for i in dev} & {qbe.split("test").targets[i][1] for i in test_rows}


def test_qbe_leaves_too_short_queries_out_of_the_scores(tiny_corpus, tmp_path, fbank):
    """A query under min_query_s is not a row of tied zero scores in the MTWV/MAP: the
    metrics are those of the other queries; the minimum is a duration at every frame rate."""
    qbe = _task("qbe", tiny_corpus, tmp_path, fbank)
    rng = np.random.default_rng(0)
    truth = rng.random((6, 20)) < 0.2
    truth[:, 0] = True
    scores = rng.normal(size=(6, 20)) + 2.0 * truth
    short = scores.copy()
    short[2] = np.nan
    assert qbe._metrics(short, truth) == qbe._metrics(np.delete(scores, 2, 0), np.delete(truth, 2, 0))
    assert qbe._metrics(short, truth) != qbe._metrics(np.where(np.isnan(short), 0.0, short), truth)
    with pytest.raises(ValueError, match="every query is shorter"):
        qbe._metrics(np.full((2, 20), np.nan), truth[:2])
    assert qbe._min_query_frames() == 5                           # 50 ms at 100 Hz
    qbe.ctx.upstream = load_upstream("random:hubert@tiny")
    assert qbe._min_query_frames() == 3                           # 60 ms at 50 Hz, not 100 ms


def test_sd_mixtures_are_deterministic(tiny_corpus, tmp_path, fbank, monkeypatch):
    small = {"mixtures": {"num_train": 4, "num_eval": 3}}
    monkeypatch.chdir(tmp_path)   # a relative work directory, as the runner's default
    a = _task("sd", tiny_corpus, Path("a"), fbank, **small)
    b = _task("sd", tiny_corpus, tmp_path / "b", fbank, **small)
    da, db = a.split("valid"), b.split("valid")
    assert len(da.targets) == 3 and da.targets == db.targets
    for i in range(3):
        wa = np.fromfile(da.manifest.audio_path(i), dtype=np.uint8)
        assert np.array_equal(wa, np.fromfile(db.manifest.audio_path(i), dtype=np.uint8))
        segs, speakers = da.targets[i]
        assert len(set(speakers)) == 2 and {s.speaker for s in segs} == set(speakers)
    assert len(a.split("train").targets) == 4


def test_sd_reference_activity_leaves_out_the_sources_silences(tiny_corpus, tmp_path, fbank):
    """The RTTM comes from the sources' alignments, whose files hold phone *ids*: silence
    (``sil``, id 0 in the corpus) must not count as speech. Every read utterance opens with
    silence, so no mixture's first turn may start at 0 s, and each speaker's speaking time
    is the non-silence frames of its source, not the whole file."""
    read = Path(tiny_corpus) / "read"
    assert read.joinpath("dict.phn.txt").read_text().split()[0] == "sil"
    rows = read.joinpath("valid.phn_ali").read_text().splitlines()
    assert all(r.split()[0] == "0" for r in rows)
    task = _task("sd", tiny_corpus, tmp_path, fbank, mixtures={"num_train": 2, "num_eval": 6})
    data = task.split("valid")
    speech_s = sorted(sum(p != "0" for p in r.split()) / 100 for r in rows)
    for i, (segs, speakers) in enumerate(data.targets):
        assert min(s.start for s in segs) > 0
        for spk in speakers:
            talk = sum(s.end - s.start for s in segs if s.speaker == spk)
            # turns bridge pauses shorter than 0.1 s, so a turn is at least the source's speech
            assert talk >= speech_s[0] - 1e-6
            assert talk < data.manifest.sizes[i] / 16000


def test_sd_real_data_needs_a_reference_for_every_recording(tiny_corpus, tmp_path, fbank):
    """rttm_dir (real data, e.g. LibriMix): a recording of the manifest without RTTM lines is an
    error naming it, not a recording silently scored against an empty reference."""
    ref = tmp_path / "ref"
    ref.mkdir()
    from speechssl import audio

    for name, n in (("mixA", 32000), ("mixB", 16000)):  # the manifest is validated before any work
        audio.save(ref / "wav" / f"{name}.wav", np.zeros(n, np.float32))
    (ref / "test.tsv").write_text(".\nwav/mixA.wav\t32000\nwav/mixB.wav\t16000\n")
    (ref / "test.rttm").write_text("SPEAKER mixA 1 0.10 0.50 <NA> <NA> s1 <NA> <NA>\n"
                                   "SPEAKER mixA 1 0.40 0.90 <NA> <NA> s2 <NA> <NA>\n")
    task = _task("sd", tiny_corpus, tmp_path, fbank, rttm_dir=str(ref))
    with pytest.raises(ValueError, match=r"test.rttm has no SPEAKER line for recording 'mixB'"):
        task.split("test")
    (ref / "test.rttm").write_text((ref / "test.rttm").read_text() + "SPEAKER mixB 1 0 1 <NA> <NA> s3 <NA> <NA>\n")
    task = _task("sd", tiny_corpus, tmp_path, fbank, rttm_dir=str(ref))
    segs, speakers = task.split("test").targets[0]
    assert speakers == ["s1", "s2"] and len(segs) == 2


def test_sd_alignment_ids_are_checked(tmp_path):
    from speechssl.downstream.sd.task import _alignment_phones

    (tmp_path / "dict.phn.txt").write_text("sil 3\na 2\n")
    (tmp_path / "x.phn_ali").write_text("0 1 1 0\n")
    assert _alignment_phones(tmp_path / "x.phn_ali", 1) == ["sil a a sil"]
    (tmp_path / "x.phn_ali").write_text("0 7 1\n")
    with pytest.raises(ValueError, match=r"x.phn_ali:1: expected phone ids 0..1"):
        _alignment_phones(tmp_path / "x.phn_ali", 1)
    (tmp_path / "dict.phn.txt").unlink()
    with pytest.raises(FileNotFoundError, match="dict.phn.txt"):
        _alignment_phones(tmp_path / "x.phn_ali", 1)


def test_model_keeps_a_frozen_upstream_out_of_training(tiny_corpus, tmp_path):
    up = load_upstream("random:hubert@tiny")
    task = _task("ks", tiny_corpus, tmp_path, up)
    task.ctx.cache = None   # run the upstream on audio
    model = task.build_model()
    assert not any(k.startswith("upstream") for k in model.state_dict())
    assert all(p.requires_grad for p in model.parameters())
    model.train()
    assert not up.model.training
    batch = task.collate([task.dataset("train")[i] for i in range(2)])
    loss, n, logs = task.loss(model, batch)
    loss.backward()
    assert n == 2 and model.featurizer.weights.grad is not None
    assert all(p.grad is None for p in up.model.parameters())
    # fine-tuning: the upstream becomes part of the model and gets gradients
    ft = _task("ks", tiny_corpus, tmp_path, load_upstream("random:hubert@tiny"))
    ft.ctx.cache, ft.ctx.trainable = None, True
    m2 = ft.build_model()
    assert any(k.startswith("upstream.") for k in m2.state_dict())
    ft.loss(m2, batch)[0].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m2.upstream.parameters())


def test_cached_and_uncached_batches_agree(tiny_corpus, tmp_path):
    up = load_upstream("random:hubert@tiny")
    cached = _task("sid", tiny_corpus, tmp_path, up)
    live = _task("sid", tiny_corpus, tmp_path, up)
    live.ctx.cache = None
    torch.manual_seed(0)
    m = cached.build_model().eval()
    b1 = cached.collate([cached.dataset("valid")[i] for i in range(3)])
    b2 = live.collate([live.dataset("valid")[i] for i in range(3)])
    with torch.no_grad():
        o1 = m(**cached.model_inputs(b1))["logits"][0]
        m._frozen = [up.model]
        o2 = m(**live.model_inputs(b2))["logits"][0]
    torch.testing.assert_close(o1, o2, atol=1e-4, rtol=1e-4)
