from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from speechssl.data.dataset import AudioDataset, LabelSpec, frame_crop
from speechssl.data.manifest import Dictionary, FormatError, write_labels, write_manifest
from tests.data.conftest import SIZES, SPEAKERS, ramp, start_of


def _labels(root, **kw):
    return [LabelSpec(root / "train.km", "frame", label_rate=50),
            LabelSpec(root / "train.ltr", "sequence", dictionary=root / "dict.ltr.txt"),
            LabelSpec(root / "train.spk", "utterance", **kw)]


def test_items_without_crop(corpus):
    ds = AudioDataset(corpus / "train.tsv", _labels(corpus))
    assert len(ds) == len(SIZES) and list(ds.sizes) == SIZES
    item = ds[1]
    assert item["id"] == "wav/u1" and item["index"] == 1 and item["offset"] == 0
    assert item["wav"].dtype == torch.float32 and item["wav"].shape == (16000,)
    np.testing.assert_array_equal(item["wav"].numpy(), ramp(16000))
    assert item["km"].tolist() == list(range(50))
    assert item["ltr"].tolist() == [1, 2, 0]  # "b c a" with dictionary a, b, c
    assert item["spk"] == sorted(set(SPEAKERS)).index("amy")


def test_random_crop_keeps_frame_labels_aligned(corpus):
    ds = AudioDataset(corpus / "train.tsv", _labels(corpus), max_sample_size=3200, seed=5)
    assert list(ds.sizes) == [min(s, 3200) for s in SIZES]
    for epoch in (1, 2, 3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            start = start_of(item["wav"])
            assert start == item["offset"]
            assert item["wav"].numel() == min(SIZES[i], 3200)
            if SIZES[i] > 3200:
                # hand arithmetic: 50 Hz labels, 320 samples a frame; 3200 samples = 10 frames
                assert item["km"].tolist() == list(range(round(start / 320), round(start / 320) + 10))
            else:
                assert item["km"].tolist() == list(range(SIZES[i] // 320))


def test_crop_is_deterministic_per_seed_epoch_index(corpus):
    a = AudioDataset(corpus / "train.tsv", max_sample_size=1600, seed=1)
    b = AudioDataset(corpus / "train.tsv", max_sample_size=1600, seed=1)
    offsets = {}
    for epoch in (1, 2):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        offsets[epoch] = [a[i]["offset"] for i in range(len(a))]
        assert offsets[epoch] == [b[i]["offset"] for i in range(len(b))]
        assert [a[i]["seed"] for i in range(len(a))] == [b[i]["seed"] for i in range(len(b))]
    assert offsets[1] != offsets[2]
    # reading items in another order gives the same items
    a.set_epoch(1)
    assert [a[i]["offset"] for i in reversed(range(len(a)))] == offsets[1][::-1]


@pytest.mark.parametrize("crop,expected", [("center", lambda d: d // 2), ("start", lambda d: 0)])
def test_eval_crops(corpus, crop, expected):
    ds = AudioDataset(corpus / "train.tsv", max_sample_size=3000, crop=crop)
    for i, size in enumerate(SIZES):
        assert ds[i]["offset"] == (expected(size - 3000) if size > 3000 else 0)


def test_frame_crop_matches_fairseq_rounding():
    assert frame_crop(480, 3200, 50, 16000) == (2, 10)  # 480 * 50 / 16000 = 1.5 -> round half to even
    assert frame_crop(800, 1000, 100, 16000) == (5, 6)  # 6.25 -> 6
    assert frame_crop(0, 16000, 50, 16000) == (0, 50)


def test_min_sample_size_drops_with_a_log_line(corpus, speechssl_logs):
    ds = AudioDataset(corpus / "train.tsv", _labels(corpus), min_sample_size=4000)
    assert len(ds) == 4 and list(ds.rows) == [0, 1, 2, 4]
    assert "dropped 2 of 6 utterances shorter than min_sample_size=4000" in speechssl_logs.text
    assert ds[3]["id"] == "wav/u4" and ds[3]["km"].tolist() == list(range(40))


def test_normalize_is_layer_norm(corpus):
    ds = AudioDataset(corpus / "train.tsv", normalize=True)
    x = ramp(SIZES[0]).astype(np.float64)
    ref = (x - x.mean()) / np.sqrt(x.var() + 1e-5)
    np.testing.assert_allclose(ds[0]["wav"].numpy(), ref, atol=1e-5)


def test_label_row_count_mismatch_names_both_numbers(corpus, tmp_path):
    write_labels(tmp_path / "bad.km", ["0 1"] * 4)
    with pytest.raises(FormatError, match=r"bad\.km: has 4 rows but the manifest has 6"):
        AudioDataset(corpus / "train.tsv", [LabelSpec(tmp_path / "bad.km", "frame", label_rate=50)])


def test_frame_count_mismatch_names_both_numbers(corpus, tmp_path):
    rows = [" ".join("0" for _ in range(s // 320)) for s in SIZES]
    rows[1] = " ".join("0" for _ in range(25))  # 16000 samples at 50 Hz implies 50 frames
    write_labels(tmp_path / "short.km", rows)
    with pytest.raises(FormatError, match=r"short\.km:2: has 25 frames but wav/u1\.wav \(16000 samples\) implies 50"):
        AudioDataset(corpus / "train.tsv", [LabelSpec(tmp_path / "short.km", "frame", label_rate=50)])


def test_label_errors(corpus, tmp_path):
    with pytest.raises(ValueError, match="needs a dictionary"):
        AudioDataset(corpus / "train.tsv", [LabelSpec(corpus / "train.ltr", "sequence")])
    with pytest.raises(ValueError, match="label_rate"):
        AudioDataset(corpus / "train.tsv", [LabelSpec(corpus / "train.km", "frame")])
    with pytest.raises(ValueError, match="reserved"):
        AudioDataset(corpus / "train.tsv", [LabelSpec(corpus / "train.spk", "utterance", name="wav")])
    with pytest.raises(ValueError, match="two labels are named 'spk'"):
        AudioDataset(corpus / "train.tsv", [LabelSpec(corpus / "train.spk", "utterance")] * 2)
    # refused up front (issue 23 item 4), not when row 2 is first drawn
    with pytest.raises(FormatError, match=r"train\.ltr:2: symbol 'c' is not in the dictionary"):
        AudioDataset(corpus / "train.tsv", [LabelSpec(corpus / "train.ltr", "sequence",
                                                      dictionary=Dictionary(["a", "b"], [1, 1]))])


def test_utterance_labels_with_shared_dictionary(corpus):
    classes = Dictionary(["cat", "bob", "amy"], [0, 0, 0])
    ds = AudioDataset(corpus / "train.tsv", [LabelSpec(corpus / "train.spk", "utterance", dictionary=classes)])
    assert [ds[i]["spk"] for i in range(len(ds))] == [classes.index(s) for s in SPEAKERS]


def test_audio_errors_name_the_file(corpus, tmp_path):
    sf.write(tmp_path / "a.wav", ramp(800), 8000, subtype="FLOAT")
    write_manifest(tmp_path / "sr.tsv", tmp_path, [("a.wav", 800)])
    with pytest.raises(ValueError, match=r"a\.wav: sample rate is 8000 Hz, expected 16000 Hz"):
        AudioDataset(tmp_path / "sr.tsv")[0]
    sf.write(tmp_path / "b.wav", ramp(800), 16000, subtype="FLOAT")
    write_manifest(tmp_path / "n.tsv", tmp_path, [("b.wav", 900)])
    with pytest.raises(ValueError, match=r"b\.wav: has 800 samples but the manifest .* says 900"):
        AudioDataset(tmp_path / "n.tsv")[0]
    write_manifest(tmp_path / "missing.tsv", tmp_path, [("nope.wav", 900)])
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        AudioDataset(tmp_path / "missing.tsv")[0]
