"""``speechssl text unpaired`` / ``spm-train``: evaluation text kept out, deterministic models, clear errors."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from speechssl import cli
from speechssl.corpus.unpaired import evaluation_text, unpaired_text
from speechssl.data.manifest import read_labels


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix != ".wav"}


def _contains(long: str, short: str) -> bool:
    return f" {short} " in f" {long} "


def test_unpaired_keeps_evaluation_text_out(tiny_corpus: Path, tmp_path: Path) -> None:
    before = _digests(tiny_corpus)
    assert cli.main(["text", "unpaired", str(tiny_corpus), "--out", str(tmp_path / "t"), "--extra", "300",
                     "--valid", "40"]) == 0
    assert _digests(tiny_corpus) == before  # the corpus folder is not touched
    train = (tmp_path / "t" / "train.txt").read_text().splitlines()
    valid = (tmp_path / "t" / "valid.txt").read_text().splitlines()
    spoken_train = [r for r in read_labels(tiny_corpus / "read" / "train.wrd")]
    assert train[:len(spoken_train)] == spoken_train  # the read sentences of the pretraining split, first
    assert len(train) == len(spoken_train) + 300 and len(valid) == 40
    assert not set(train) & set(valid)
    # independent oracle: every non-train .wrd row of the corpus, read from the files here
    eval_rows = [r for p in sorted(tiny_corpus.glob("*/*.wrd")) if p.stem != "train" and p.parent.name != "pretrain"
                 for r in read_labels(p) if r.strip()]
    assert set(eval_rows) == set(evaluation_text(tiny_corpus))
    assert any((tiny_corpus / "read" / f"{s}.wrd").is_file() for s in ("valid", "test"))
    for line in train + valid:
        assert line not in eval_rows
        for row in eval_rows:
            if len(row.split()) >= 3:
                assert not _contains(row, line) and not _contains(line, row), (line, row)
    all_spoken = {r for p in tiny_corpus.glob("*/*.wrd") for r in read_labels(p)}
    assert not set(train[len(spoken_train):]) & all_spoken  # the extra sentences were never spoken
    again = unpaired_text(tiny_corpus, extra=300, valid=40)
    assert again.train == train and again.valid == valid  # deterministic


def test_unpaired_drops_train_rows_inside_evaluation_utterances(tmp_path: Path) -> None:
    corpus = tmp_path / "c"
    (corpus / "read").mkdir(parents=True)
    (corpus / "read" / "train.wrd").write_text("THE CAT SAT DOWN\nA DOG RAN FAST HOME\nTHE CAT SAT DOWN\nHI\n")
    # a two-sentence test utterance holding the first training sentence
    (corpus / "read" / "test.wrd").write_text("BIRDS SING LOUDLY THE CAT SAT DOWN\nHI\n")
    text = unpaired_text(corpus, extra=5, valid=2)
    assert text.train[0] == "A DOG RAN FAST HOME"
    assert "THE CAT SAT DOWN" not in text.train and "HI" not in text.train
    assert text.stats["dropped_as_evaluation"] == 3 and text.stats["dropped_duplicates"] == 0
    assert len(text.train) == 1 + 5 and len(text.valid) == 2
    # another corpus's evaluation text (the seed-0 evaluation corpus) stays out too
    other = tmp_path / "eval"
    (other / "read").mkdir(parents=True)
    (other / "read" / "test.wrd").write_text("A DOG RAN FAST HOME\n")
    (other / "read" / "train.wrd").write_text("BIRDS SING LOUDLY\n")  # training text of the other: allowed
    text = unpaired_text(corpus, extra=5, valid=2, exclude=[other])
    assert "A DOG RAN FAST HOME" not in text.train and text.stats["dropped_as_evaluation"] == 4
    with pytest.raises(FileNotFoundError, match="corpus folder to exclude not found"):
        unpaired_text(corpus, extra=1, valid=1, exclude=[tmp_path / "nope"])


def test_unpaired_errors(tmp_path: Path, speechssl_logs: pytest.LogCaptureFixture,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli.main(["text", "unpaired", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 1
    assert "corpus folder not found" in speechssl_logs.text
    (tmp_path / "c").mkdir()
    assert cli.main(["text", "unpaired", str(tmp_path / "c"), "--out", str(tmp_path / "o")]) == 1
    assert "read/train.wrd: no training transcripts" in speechssl_logs.text
    (tmp_path / "c" / "read").mkdir()
    (tmp_path / "c" / "read" / "train.wrd").write_text("ONE TWO THREE\n")
    from speechssl.corpus import unpaired

    # a grammar that can say one sentence only: the second one is never found
    monkeypatch.setattr(unpaired.TextBank, "sentence", lambda self, topic, rng, sentences=1: "Only this.")
    with pytest.raises(ValueError, match="the topic grammars gave only 1 new sentences of the 2 asked for"):
        unpaired_text(tmp_path / "c", extra=1, valid=1, max_tries=3)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="is the corpus folder"):
        from speechssl.corpus.unpaired import write_unpaired_text
        write_unpaired_text(tmp_path / "c", tmp_path / "c", extra=1, valid=1)


def test_spm_train_deterministic_with_speecht5_ids(tiny_corpus: Path, tmp_path: Path) -> None:
    import sentencepiece as spm

    text = tmp_path / "t"
    assert cli.main(["text", "unpaired", str(tiny_corpus), "--out", str(text), "--extra", "200"]) == 0
    a, b, c = tmp_path / "a.model", tmp_path / "b.model", tmp_path / "c.model"
    assert cli.main(["text", "spm-train", "--text", str(text / "train.txt"), "--out", str(a),
                     "--vocab-size", "120"]) == 0
    assert cli.main(["text", "spm-train", "--text", str(text / "train.txt"), "--out", str(b),
                     "--vocab-size", "120"]) == 0
    assert a.read_bytes() == b.read_bytes()
    # --corpus trains on the same unpaired training text
    assert cli.main(["text", "spm-train", "--corpus", str(tiny_corpus), "--extra", "200", "--out", str(c),
                     "--vocab-size", "120"]) == 0
    assert c.read_bytes() == a.read_bytes()
    sp = spm.SentencePieceProcessor(model_file=str(a))
    assert sp.get_piece_size() == 120
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()) == (0, 1, 2, 3)
    assert sp.piece_to_id("<mask>") == 4 and sp.id_to_piece(4) == "<mask>"
    line = (text / "train.txt").read_text().splitlines()[0]
    assert sp.decode(sp.encode(line)) == line
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temporary left


def test_spm_train_errors(tmp_path: Path, speechssl_logs: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "m.model"
    assert cli.main(["text", "spm-train", "--text", str(tmp_path / "nope.txt"), "--out", str(out)]) == 1
    assert "--text: no such file" in speechssl_logs.text
    (tmp_path / "empty.txt").write_text("\n \n")
    assert cli.main(["text", "spm-train", "--text", str(tmp_path / "empty.txt"), "--out", str(out)]) == 1
    assert "no non-blank line" in speechssl_logs.text
    (tmp_path / "small.txt").write_text("HELLO WORLD\nFOO BAR\n")
    assert cli.main(["text", "spm-train", "--text", str(tmp_path / "small.txt"), "--out", str(out),
                     "--vocab-size", "500"]) == 1
    assert "vocab_size=500: more than this text supports (at most" in speechssl_logs.text
    assert cli.main(["text", "spm-train", "--text", str(tmp_path / "small.txt"), "--out", str(out),
                     "--vocab-size", "5"]) == 1
    assert "must exceed the 5 special and user-defined pieces" in speechssl_logs.text
    assert not out.exists()
    with pytest.raises(SystemExit):
        cli.main(["text", "spm-train", "--out", str(out)])  # neither --text nor --corpus
