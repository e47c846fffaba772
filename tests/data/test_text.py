"""TextDataset and train_sentencepiece, against sentencepiece itself."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch

from speechssl.data.manifest import FormatError
from speechssl.data.text import TextCollater, TextDataset, read_lines, train_sentencepiece

WORDS = "the cat sat on a mat and dog ran far away quick brown fox jumps over lazy river".split()


def _lines(n: int = 200) -> list[str]:
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS, size=rng.integers(2, 15))) for _ in range(n)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("text")
    lines = _lines()
    lines[3] = ""  # a blank line is skipped
    lines[7] = "   "
    (root / "train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    model = train_sentencepiece(root / "train.txt", root / "spm" / "unigram.model", vocab_size=40)
    return root / "train.txt", model


def test_training_is_deterministic_atomic_and_has_the_special_ids(corpus, tmp_path):
    text, model = corpus
    again = train_sentencepiece(text, tmp_path / "again.model", vocab_size=40)
    assert again.read_bytes() == model.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.model"]  # no temporary file left behind
    sp = spm.SentencePieceProcessor(model_file=str(model))
    assert sp.GetPieceSize() == 40
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()) == (0, 1, 2, 3)


def test_training_errors(corpus, tmp_path):
    text, _ = corpus
    with pytest.raises(ValueError, match=r"train\.txt: sentencepiece training failed with vocab_size=5000"):
        train_sentencepiece(text, tmp_path / "big.model", vocab_size=5000)
    assert not (tmp_path / "big.model").exists()
    (tmp_path / "bad.txt").write_bytes(b"fine line\nstill fine\nbroken \xff\xfe here\n")
    with pytest.raises(FormatError, match=r"bad\.txt:3: not valid UTF-8"):
        train_sentencepiece(tmp_path / "bad.txt", tmp_path / "x.model", vocab_size=10)
    (tmp_path / "blank.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match="no non-blank line"):
        train_sentencepiece(tmp_path / "blank.txt", tmp_path / "x.model", vocab_size=10)


def test_items_are_sentencepiece_encodings_plus_eos(corpus):
    text, model = corpus
    sp = spm.SentencePieceProcessor(model_file=str(model))
    ds = TextDataset(text, model)
    rows = read_lines(text)
    assert len(ds) == len(rows) - 2
    assert ds.lines[:5].tolist() == [1, 2, 3, 5, 6]  # lines 4 and 8 are blank
    for i in (0, 3, 50, len(ds) - 1):
        item = ds[i]
        line = int(ds.lines[i])
        assert item["line"] == line and item["id"] == f"train:{line}"
        assert item["tokens"].tolist() == sp.encode(rows[line - 1]) + [sp.eos_id()]
        assert ds.sizes[i] == len(item["tokens"])
        assert ds.decode(item["tokens"]) == rows[line - 1]
    bos = TextDataset(text, model, add_bos=True, add_eos=False)[0]["tokens"]
    assert bos[0] == sp.bos_id() and bos[1:].tolist() == sp.encode(rows[0])


def test_capped_lines_crop_a_seeded_window(corpus):
    text, model = corpus
    full = TextDataset(text, model, add_eos=False)
    capped = TextDataset(text, model, max_tokens_per_item=8, seed=1)
    assert (capped.sizes == np.minimum(full.sizes + 1, 8)).all()
    long_items = [i for i in range(len(full)) if full.sizes[i] > 7]
    offsets = set()
    for epoch in (1, 2, 3, 4):
        capped.set_epoch(epoch)
        for i in long_items[:10]:
            item = capped[i]
            body = full[i]["tokens"]
            off = item["offset"]
            assert item["tokens"].tolist() == body[off:off + 7].tolist() + [capped.eos_id]
            offsets.add(off)
    assert len(offsets) > 3
    start = TextDataset(text, model, max_tokens_per_item=8, crop="start")
    assert all(start[i]["offset"] == 0 for i in long_items[:5])


def test_deterministic_and_independent_of_global_rng(corpus):
    text, model = corpus
    torch.manual_seed(0)
    a = [TextDataset(text, model, max_tokens_per_item=6, seed=4)[i]["tokens"] for i in range(30)]
    torch.manual_seed(1)
    np.random.seed(1)
    b = [TextDataset(text, model, max_tokens_per_item=6, seed=4)[i]["tokens"] for i in range(30)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_collater_pads_with_the_pad_id(corpus):
    text, model = corpus
    ds = TextDataset(text, model)
    items = [ds[0], ds[1], ds[2]]
    batch = ds.collater()(items)
    lengths = [len(it["tokens"]) for it in items]
    assert batch["lengths"].tolist() == lengths and batch["tokens"].shape == (3, max(lengths))
    for row, it in zip(batch["tokens"], items):
        n = len(it["tokens"])
        assert torch.equal(row[:n], it["tokens"]) and (row[n:] == 3).all()
    assert batch["padding_mask"].sum(1).tolist() == [max(lengths) - n for n in lengths]
    assert TextCollater(pad_id=0)(items)["tokens"].dtype == torch.long


def test_dataset_errors(corpus, tmp_path):
    text, model = corpus
    with pytest.raises(FileNotFoundError, match="text file not found"):
        TextDataset(tmp_path / "nope.txt", model)
    with pytest.raises(FileNotFoundError, match="sentencepiece model not found"):
        TextDataset(text, tmp_path / "nope.model")
    (tmp_path / "junk.model").write_bytes(b"junk")
    with pytest.raises(FormatError, match=r"junk\.model: not a sentencepiece model"):
        TextDataset(text, tmp_path / "junk.model")
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xc3\x28\n")
    with pytest.raises(FormatError, match=r"bad\.txt:2: not valid UTF-8"):
        TextDataset(tmp_path / "bad.txt", model)
    with pytest.raises(ValueError, match="must exceed"):
        TextDataset(text, model, max_tokens_per_item=1)
