"""Topic label metrics: NMI against scikit-learn, purity by hand, the corpus references, the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from speechssl.cli import main as cli
from speechssl.cluster.topic_metrics import corpus_references, evaluate_topics, topic_scores
from speechssl.data.manifest import FormatError, write_labels, write_manifest


@pytest.mark.parametrize("case", range(6))
def test_nmi_is_sklearns(case: int) -> None:
    rng = np.random.default_rng(case)
    n = int(rng.integers(5, 300))
    a = rng.integers(0, int(rng.integers(1, 9)), n)
    b = (a + rng.integers(0, 3, n)) % 7 if case % 2 else rng.integers(0, int(rng.integers(1, 12)), n)
    if case == 4:
        a = np.zeros(n, dtype=int)  # one class: NMI 0 unless the topics are constant too
    if case == 5:
        a, b = np.zeros(n, dtype=int), np.full(n, 3)
    got = topic_scores([str(v) for v in b], [f"c{v}" for v in a])
    assert got["nmi"] == pytest.approx(normalized_mutual_info_score(a, b), abs=1e-12)


def test_purity_by_hand() -> None:
    topics = ["0", "0", "0", "1", "1", "2"]
    ref = ["m", "m", "f", "f", "f", "m"]
    s = topic_scores(topics, ref)
    assert s["purity"] == pytest.approx((2 + 2 + 1) / 6)  # topic 0 -> m, 1 -> f, 2 -> m
    assert s["inverse_purity"] == pytest.approx((2 + 2) / 6)  # m -> topic 0, f -> topic 1
    assert (s["n_rows"], s["n_topics"], s["n_classes"]) == (6, 3, 2)
    with pytest.raises(ValueError, match="6 topic labels but 5 reference"):
        topic_scores(topics, ref[:5])


def _corpus(root: Path) -> Path:
    corpus = root / "corpus"
    speakers = [{"id": "spk001", "gender": "m", "variant": "m3"}, {"id": "spk002", "gender": "f", "variant": "f1"}]
    (corpus / "read").mkdir(parents=True)
    (corpus / "keywords").mkdir()
    (corpus / "speakers.json").write_text(json.dumps(speakers))
    write_manifest(corpus / "read" / "train.tsv", "wav", [("a.wav", 16000), ("b.wav", 16000)])
    write_labels(corpus / "read" / "train.spk", ["spk001", "spk002"])
    write_labels(corpus / "read" / "train.topic", ["music", "sports"])
    write_labels(corpus / "read" / "train.style", ["happy", "sad"])
    write_manifest(corpus / "keywords" / "train.tsv", "wav", [("c.wav", 16000), ("n.wav", 16000)])
    write_labels(corpus / "keywords" / "train.spk", ["spk002", "none"])
    # the pretraining view: its rows point at the subsets' audio
    write_manifest(corpus / "pretrain" / "train.tsv", "..",
                   [("read/wav/b.wav", 1), ("keywords/wav/c.wav", 1), ("read/wav/a.wav", 1), ("keywords/wav/n.wav", 1)])
    return corpus


def test_corpus_references_follow_the_manifest_rows(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    refs = corpus_references(corpus, corpus / "pretrain" / "train.tsv")
    assert refs == {"topic": ["sports", None, "music", None], "spk": ["spk002", "spk002", "spk001", None],
                    "gender": ["f", "f", "m", None], "voice": ["f1", "f1", "m3", None],
                    "style": ["sad", None, "happy", None]}
    write_labels(tmp_path / "train.topic", ["1", "1", "0", "0"])
    results = {r["reference"]: r for r in evaluate_topics(tmp_path / "train.topic", refs)}
    assert results["gender"]["nmi"] == pytest.approx(1.0) and results["gender"]["n_rows"] == 3
    assert results["topic"]["n_rows"] == 2
    other = tmp_path / "other.tsv"
    write_manifest(other, tmp_path, [("x.wav", 1)])
    with pytest.raises(ValueError, match="is not an utterance of the corpus"):
        corpus_references(corpus, other)
    write_labels(tmp_path / "short.topic", ["1"])
    with pytest.raises(FormatError, match="has 1 rows but reference 'topic' has 4"):
        evaluate_topics(tmp_path / "short.topic", refs)


def test_cli_topic_metrics(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    corpus = _corpus(tmp_path)
    write_labels(tmp_path / "train.topic", ["1", "1", "0", "0"])
    write_labels(tmp_path / "train.parity", ["a", "b", "a", "b"])
    out, md = tmp_path / "t.json", tmp_path / "t.md"
    assert cli(["cluster", "topic-metrics", "--topic", str(tmp_path / "train.topic"), "--corpus", str(corpus),
                "--manifest", str(corpus / "pretrain" / "train.tsv"), "--ref", f"parity={tmp_path / 'train.parity'}",
                "--out", str(out), "--markdown", str(md)]) == 0
    printed = capsys.readouterr().out
    assert "gender" in printed and "parity" in printed
    table = json.loads(out.read_text())
    assert [r["reference"] for r in table["results"]] == ["topic", "spk", "gender", "voice", "style", "parity"]
    assert "| gender |" in md.read_text()
    assert cli(["cluster", "topic-metrics", "--topic", str(tmp_path / "train.topic")]) == 1
