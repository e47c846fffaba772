"""The tiny corpus as other parts see it: formats, label consistency, alignments, speakers."""
from __future__ import annotations

import collections
import itertools
import json

import editdistance
import numpy as np
import pytest
import soundfile

import speechssl.corpus
from speechssl.corpus.align import num_frames
from speechssl.corpus.card import LAYOUT
from speechssl.data.manifest import check_label_frames, read_dict, read_labels, read_manifest

SPLITS = {"read": ("train", "valid", "test"), "keywords": ("train", "valid", "test"),
          "commands": ("train", "valid", "test"), "verification": ("test",), "qbe": ("queries", "docs")}
LABELS = {"read": ("wrd", "ltr", "phn", "phn_ali", "spk", "topic", "style"), "keywords": ("kw", "wrd", "spk"),
          "commands": ("wrd", "ltr", "intent", "slot", "spk"), "verification": ("wrd", "spk"), "qbe": ("wrd", "spk")}


def _labels(corpus, subset, split, name):
    m = read_manifest(corpus / subset / f"{split}.tsv")
    return read_labels(corpus / subset / f"{split}.{name}", expected_rows=len(m))


@pytest.fixture(scope="module")
def card(tiny_corpus):
    return json.loads((tiny_corpus / "corpus.json").read_text())


def test_layout_is_documented_in_the_package_and_the_corpus(tiny_corpus):
    # the package docstring points at card.LAYOUT (one copy), and every build writes it out
    assert "speechssl.corpus.card.LAYOUT" in speechssl.corpus.__doc__
    readme = (tiny_corpus / "README.md").read_text().splitlines()
    missing = [line for line in LAYOUT.splitlines() if not any(line.strip() in r for r in readme)]
    assert not missing, f"the corpus README.md lacks layout lines: {missing[:3]}"


def test_card_matches_files(tiny_corpus, card):
    assert card["preset"] == "tiny" and card["seed"] == 0 and card["sample_rate"] == 16000
    assert card["speakers"] == {"train": 10, "heldout": 4}
    assert 8.5 <= card["hours"] * 60 <= 11.5  # about 10 minutes
    total = 0
    for subset, splits in SPLITS.items():
        assert set(card["subsets"][subset]["splits"]) == set(splits)
        for split in splits:
            m = read_manifest(tiny_corpus / subset / f"{split}.tsv")
            assert card["subsets"][subset]["splits"][split]["utterances"] == len(m)
            total += sum(m.sizes)
    assert card["hours"] == pytest.approx(total / 16000 / 3600, abs=1e-3)
    assert card["phone_inventory"][0] == "sil" and card["num_phones"] >= 40
    assert read_dict(tiny_corpus / "read" / "dict.phn.txt").symbols == card["phone_inventory"]
    readme = (tiny_corpus / "README.md").read_text()
    assert "phn_ali" in readme and "trials.txt" in readme and "ground_truth.txt" in readme


def test_every_label_file_matches_its_manifest(tiny_corpus):
    for subset, splits in SPLITS.items():
        for split in splits:
            for name in LABELS[subset]:
                _labels(tiny_corpus, subset, split, name)  # raises on a row-count mismatch
        for name in LABELS[subset]:
            if name != "phn_ali":
                d = read_dict(tiny_corpus / subset / f"dict.{name}.txt")
                for split in splits:
                    for row in _labels(tiny_corpus, subset, split, name):
                        assert all(tok in d for tok in row.split()), (subset, name, row)


def test_audio_format_and_manifest_sizes(tiny_corpus):
    for subset, splits in SPLITS.items():
        for split in splits:
            m = read_manifest(tiny_corpus / subset / f"{split}.tsv")
            assert (tiny_corpus / subset / f"{split}.tsv").read_text().splitlines()[0] == "wav"  # relocatable
            for i in range(len(m)):
                info = soundfile.info(str(m.audio_path(i)))
                assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
                assert info.frames == m.sizes[i]
                if subset == "keywords":
                    assert m.sizes[i] == 16000


def test_phone_alignments_frame_counts_and_ids(tiny_corpus):
    phones = read_dict(tiny_corpus / "read" / "dict.phn.txt")
    for split in SPLITS["read"]:
        m = read_manifest(tiny_corpus / "read" / f"{split}.tsv")
        ali = _labels(tiny_corpus, "read", split, "phn_ali")
        check_label_frames(m, ali, 100, label_path=f"{split}.phn_ali")
        for row, size in zip(ali, m.sizes):
            ids = [int(t) for t in row.split()]
            assert len(ids) == num_frames(size)
            assert all(0 <= i < len(phones) for i in ids)
            assert ids[0] == ids[-1] == 0  # padded with silence at both ends


def test_alignments_agree_with_audio_and_transcripts(tiny_corpus):
    phones = read_dict(tiny_corpus / "read" / "dict.phn.txt")
    exact, n, margins = 0, 0, []
    for split in SPLITS["read"]:
        m = read_manifest(tiny_corpus / "read" / f"{split}.tsv")
        ali = _labels(tiny_corpus, "read", split, "phn_ali")
        phn = _labels(tiny_corpus, "read", split, "phn")
        for i in range(len(m)):
            x, _ = soundfile.read(str(m.audio_path(i)))
            ids = np.array([int(t) for t in ali[i].split()])
            frames = np.stack([x[160 * t:160 * t + 400] for t in range(len(ids))])
            energy = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)
            edge = np.r_[ids[:5], ids[-5:]]
            assert (edge == 0).all()
            margins.append(np.median(energy[ids != 0]) - np.max(energy[np.r_[0:5, len(ids) - 5:len(ids)]]))
            # phones of .phn vs runs of non-silence frames in .phn_ali
            runs = [k for k, _ in itertools.groupby(ids) if k != 0]
            ref = [k for k, _ in itertools.groupby(phones.encode(phn[i].split()))]
            exact += runs == ref
            n += 1
            assert editdistance.eval(runs, ref) <= max(2, len(ref) // 20), (m.paths[i], runs, ref)
    assert min(margins) > 10.0  # speech frames are >10 dB above the silent edges
    assert exact >= 0.85 * n


def test_read_speakers_are_distinct_and_consistent(tiny_corpus):
    """A nearest-centroid speaker classifier on log-spectrum statistics: trained on read/train,
    it must recognise the speakers of read/valid and read/test (different sentences)."""
    def embed(path):
        x, _ = soundfile.read(str(path), dtype="float32")
        frames = np.lib.stride_tricks.sliding_window_view(x, 400)[::160] * np.hanning(400)
        power = np.abs(np.fft.rfft(frames, 512)) ** 2  # (T, 257)
        edges = np.geomspace(2, 256, 41).astype(int)  # 40 log-spaced bands
        bands = np.log(np.stack([power[:, a:b + 1].sum(1) for a, b in zip(edges[:-1], edges[1:])], 1) + 1e-9)
        loud = bands.mean(1) > np.percentile(bands.mean(1), 40)
        return np.concatenate([bands[loud].mean(0), bands[loud].std(0)])

    data = {}
    for split in SPLITS["read"]:
        m = read_manifest(tiny_corpus / "read" / f"{split}.tsv")
        data[split] = (np.stack([embed(m.audio_path(i)) for i in range(len(m))]), _labels(tiny_corpus, "read", split, "spk"))
    x, y = data["train"]
    assert len(set(y)) == 10 and set(y) == set(data["test"][1]) == set(data["valid"][1])
    classes = sorted(set(y))
    mu, sd = x.mean(0), x.std(0) + 1e-6
    centroids = np.stack([((x - mu) / sd)[[s == c for s in y]].mean(0) for c in classes])
    xe = np.concatenate([data["valid"][0], data["test"][0]])
    ye = data["valid"][1] + data["test"][1]
    pred = [classes[j] for j in (((xe - mu) / sd)[:, None] - centroids[None]).__pow__(2).sum(-1).argmin(1)]
    assert np.mean([p == t for p, t in zip(pred, ye)]) >= 0.8


def test_read_labels(tiny_corpus, card):
    topics, styles = set(), collections.Counter()
    for split in SPLITS["read"]:
        wrd = _labels(tiny_corpus, "read", split, "wrd")
        ltr = _labels(tiny_corpus, "read", split, "ltr")
        for w, l in zip(wrd, ltr):
            assert l == " ".join("|".join(w.split())) + " |"
        topics |= set(_labels(tiny_corpus, "read", split, "topic"))
        styles.update(_labels(tiny_corpus, "read", split, "style"))
    assert topics == set(card["topics"]) and len(topics) >= 5
    assert set(styles) == set(card["styles"]) and min(styles.values()) >= 10
    train = set(_labels(tiny_corpus, "read", "train", "wrd"))
    assert not train & set(_labels(tiny_corpus, "read", "test", "wrd"))  # no test sentence seen in training


def test_keywords_and_commands(tiny_corpus):
    kw_dict = read_dict(tiny_corpus / "keywords" / "dict.kw.txt").symbols
    assert kw_dict == ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_unknown_", "_silence_"]
    spk = {}
    for split in SPLITS["keywords"]:
        kw = _labels(tiny_corpus, "keywords", split, "kw")
        assert set(kw) == set(kw_dict)  # every class in every split
        for k, w, s in zip(kw, _labels(tiny_corpus, "keywords", split, "wrd"), _labels(tiny_corpus, "keywords", split, "spk")):
            assert (w == "" and s == "none") if k == "_silence_" else (k == "_unknown_" or w == k.upper())
        spk[split] = set(_labels(tiny_corpus, "keywords", split, "spk")) - {"none"}
    assert not (spk["train"] & spk["valid"]) and not (spk["train"] & spk["test"])
    for split in SPLITS["commands"]:
        for w, s, i in zip(_labels(tiny_corpus, "commands", split, "wrd"), _labels(tiny_corpus, "commands", split, "slot"),
                           _labels(tiny_corpus, "commands", split, "intent")):
            assert len(w.split()) == len(s.split()) and len(i.split("|")) == 3


def test_verification(tiny_corpus):
    m = read_manifest(tiny_corpus / "verification" / "test.tsv")
    spk = dict(zip(m.ids(), _labels(tiny_corpus, "verification", "test", "spk")))
    others = set()
    for subset in ("read", "keywords", "commands", "qbe"):
        for split in SPLITS[subset]:
            others |= set(_labels(tiny_corpus, subset, split, "spk"))
    assert not set(spk.values()) & others and len(set(spk.values())) == 4
    trials = [line.split() for line in (tiny_corpus / "verification" / "trials.txt").read_text().splitlines()]
    labels = collections.Counter(t[0] for t in trials)
    assert labels["1"] == labels["0"] > 0
    for lab, a, b in trials:
        assert a != b and int(lab) == int(spk[a] == spk[b])


def test_qbe_ground_truth(tiny_corpus):
    q = read_manifest(tiny_corpus / "qbe" / "queries.tsv")
    d = read_manifest(tiny_corpus / "qbe" / "docs.tsv")
    q_wrd = dict(zip(q.ids(), _labels(tiny_corpus, "qbe", "queries", "wrd")))
    d_wrd = dict(zip(d.ids(), _labels(tiny_corpus, "qbe", "docs", "wrd")))
    d_len = dict(zip(d.ids(), d.sizes))
    truth = [line.split() for line in (tiny_corpus / "qbe" / "ground_truth.txt").read_text().splitlines()]
    assert len(truth) == len(q) * len(d)
    hits = collections.Counter()
    for qid, did, lab in truth:
        assert int(lab) == int(q_wrd[qid] in d_wrd[did].split())
        hits[qid] += int(lab)
    assert all(hits[qid] >= 1 for qid in q_wrd) and sum(hits.values()) < len(truth) / 2
    assert len(set(q_wrd.values())) < len(q_wrd)  # each term is spoken by several speakers
    occ = [line.split() for line in (tiny_corpus / "qbe" / "occurrences.txt").read_text().splitlines()]
    assert len(occ) >= sum(hits.values())
    for qid, did, start, end in occ:
        assert 0 <= float(start) < float(end) <= d_len[did] / 16000


def test_pretrain_view_is_the_training_audio_of_the_spoken_subsets(tiny_corpus, card):
    """pretrain/{train,valid}.tsv list exactly the train (valid) utterances of read, keywords
    and commands, resolving to the same files with the same sizes; test is read's test split with
    its alignments; no evaluation-only audio (verification, qbe, test splits) is trained on."""
    view = tiny_corpus / "pretrain"
    for split in ("train", "valid", "test"):
        m = read_manifest(view / f"{split}.tsv")
        subsets = ("read",) if split == "test" else ("read", "keywords", "commands")
        want = [(str(s.audio_path(i)), s.sizes[i]) for sub in subsets
                for s in [read_manifest(tiny_corpus / sub / f"{split}.tsv")] for i in range(len(s))]
        assert [(str(m.audio_path(i)), m.sizes[i]) for i in range(len(m))] == want
        assert all(m.audio_path(i).is_file() for i in range(len(m)))
        assert card["pretrain"]["splits"][split]["utterances"] == len(m)
    train = {p.split("/")[0] for p in read_manifest(view / "train.tsv").paths}
    assert train == {"read", "keywords", "commands"}
    assert (view / "test.phn_ali").read_bytes() == (tiny_corpus / "read" / "test.phn_ali").read_bytes()
    assert (view / "dict.phn.txt").read_bytes() == (tiny_corpus / "read" / "dict.phn.txt").read_bytes()
    check_label_frames(read_manifest(view / "test.tsv"), read_labels(view / "test.phn_ali"), 100,
                       label_path=view / "test.phn_ali")
