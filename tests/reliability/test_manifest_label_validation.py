"""One validator for manifests and label sets, run by every verb before any work (issue 23 item 4).

Every case ends in one FormatError naming the file and line and what was expected.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speechssl import audio
from speechssl.data.labels import LabelFile, LabelSpec
from speechssl.data.manifest import Dictionary, FormatError, read_manifest, validate_manifest, write_manifest


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    for i, n in enumerate((4000, 5000, 6000)):
        audio.save(tmp_path / "wav" / f"u{i}.wav", np.zeros(n, np.float32))
    write_manifest(tmp_path / "train.tsv", tmp_path / "wav", [(f"u{i}.wav", n) for i, n in
                                                             enumerate((4000, 5000, 6000))])
    return tmp_path / "train.tsv"


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_a_good_manifest_passes(corpus) -> None:
    m = validate_manifest(corpus)
    assert m.sizes == [4000, 5000, 6000]


def test_missing_root_line_is_named(corpus) -> None:
    lines = corpus.read_text().splitlines()
    corpus.write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(FormatError) as exc:
        read_manifest(corpus)
    assert "train.tsv:1: expected the root directory on the first line, found a row 'u0.wav\\t4000'" in \
        _one_line(exc)


def test_duplicate_rows_are_refused(corpus) -> None:
    corpus.write_text(corpus.read_text() + "u1.wav\t5000\n")
    with pytest.raises(FormatError, match=r"train\.tsv:5: duplicate row 'u1\.wav' \(first on line 3\)"):
        read_manifest(corpus)


def test_wrong_sample_count_is_an_error_naming_the_manifest(corpus) -> None:
    corpus.write_text(corpus.read_text().replace("u1.wav\t5000", "u1.wav\t5100"))
    with pytest.raises(FormatError) as exc:
        validate_manifest(corpus)
    assert "train.tsv:3 (row 1, u1.wav): num_samples is 5100 but the file holds 5000 samples at 16000 Hz" \
        in _one_line(exc)


def test_missing_file_and_wrong_root(corpus, tmp_path) -> None:
    (tmp_path / "wav" / "u2.wav").unlink()
    with pytest.raises(FormatError, match=r"train\.tsv:4 \(row 2, u2\.wav\): .*u2\.wav not found"):
        validate_manifest(corpus)
    corpus.write_text("/nonexistent/root\n" + "".join(corpus.read_text().splitlines(True)[1:]))
    with pytest.raises(FormatError, match=r"train\.tsv:2 \(row 0, u0\.wav\): .*not found \(the root line says /nonexistent/root"):
        validate_manifest(corpus)


def test_rows_too_short_for_one_frame(corpus) -> None:
    with pytest.raises(FormatError) as exc:
        validate_manifest(corpus, min_samples=4500, what="samples of the first frame")
    assert "train.tsv:2 (row 0, u0.wav): 4000 samples, fewer than the 4500 samples of the first frame" \
        in _one_line(exc)


def test_features_dump_refuses_before_any_work(corpus, tmp_path) -> None:
    from speechssl.features import KaldiFeatureSource, dump_features

    audio.save(tmp_path / "wav" / "tiny.wav", np.zeros(100, np.float32))
    corpus.write_text(corpus.read_text() + "tiny.wav\t100\n")
    with pytest.raises(FormatError, match=r"train\.tsv:5 \(row 3, tiny\.wav\): 100 samples, fewer than the 400"):
        dump_features(corpus, tmp_path / "feats", KaldiFeatureSource("fbank"), progress=False)
    assert not (tmp_path / "feats").exists() or not any((tmp_path / "feats").iterdir())


def test_upstream_source_knows_its_first_frame() -> None:
    import torch
    from torch import nn

    from speechssl.features import UpstreamFeatureSource

    class Conv(nn.Module):
        method, downsample_rate, hidden_sizes = "t", 320, [2]

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(1, 2, kernel_size=400, stride=320)

        def forward(self, wavs):
            x = nn.utils.rnn.pad_sequence(list(wavs), batch_first=True).unsqueeze(1)
            h = self.conv(x).transpose(1, 2) if x.shape[-1] >= 400 else torch.zeros(len(wavs), 0, 2)
            n = torch.tensor([max(0, (len(w) - 400) // 320 + 1) for w in wavs])
            return {"hidden_states": [h], "last_hidden_state": h, "lengths": n}

    assert UpstreamFeatureSource(Conv(), 0).min_samples == 400


def _labels(tmp_path: Path, rows: list[str], name: str = "train.km") -> Path:
    p = tmp_path / name
    p.write_text("".join(r + "\n" for r in rows))
    return p


@pytest.mark.parametrize("row,found", [("1 2 x 3", "'x' is not a non-negative integer"),
                                       ("1 -2 3", "'-2' is not a non-negative integer"),
                                       ("1 2.5", "'2.5' is not a non-negative integer")])
def test_frame_labels_without_a_dictionary_are_checked_up_front(corpus, tmp_path, row, found) -> None:
    path = _labels(tmp_path, ["0 " * 12, row, "0 " * 18])
    m = read_manifest(corpus)
    spec = LabelSpec(path, "frame", label_rate=50.0, tolerance_s=10.0)
    with pytest.raises(FormatError) as exc:
        LabelFile(spec, m, 16000)  # at construction, not when row 2 is first drawn
    assert f"train.km:2: frame label {found}" in _one_line(exc)


def test_frame_labels_outside_the_dictionary(corpus, tmp_path) -> None:
    path = _labels(tmp_path, ["0 1", "1 7", "2"])
    d = Dictionary(["0", "1", "2"], [1, 1, 1])
    with pytest.raises(FormatError) as exc:
        LabelFile(LabelSpec(path, "frame", label_rate=50.0, dictionary=d, tolerance_s=10.0), read_manifest(corpus), 16000)
    assert "train.km:2: symbol '7' is not in the dictionary (3 symbols)" in _one_line(exc)


def test_label_row_count_and_frame_counts_name_the_label_file(corpus, tmp_path) -> None:
    m = read_manifest(corpus)
    with pytest.raises(FormatError, match=r"train\.km: has 2 rows but the manifest has 3"):
        LabelFile(LabelSpec(_labels(tmp_path, ["0", "1"]), "frame", label_rate=50.0), m, 16000)
    with pytest.raises(FormatError, match=r"train\.km:1: has 1 frames but u0\.wav \(4000 samples\) implies 12\.5"):
        LabelFile(LabelSpec(_labels(tmp_path, ["0", "1", "2"]), "frame", label_rate=50.0), m, 16000)


def test_utterance_labels_empty_row(corpus, tmp_path) -> None:
    path = _labels(tmp_path, ["a", "", "b"], "train.spk")
    d = Dictionary(["a", "b"], [1, 1])
    with pytest.raises(FormatError, match=r"train\.spk:2: "):
        LabelFile(LabelSpec(path, "utterance", dictionary=d), read_manifest(corpus), 16000)


def test_pretraining_split_validates_manifest_and_labels_before_work(corpus, tmp_path) -> None:
    from speechssl.data.dataset import audio_split

    corpus.write_text(corpus.read_text().replace("u2.wav\t6000", "u2.wav\t6400"))
    with pytest.raises(FormatError, match=r"train\.tsv:4 \(row 2, u2\.wav\): num_samples is 6400 but the file holds 6000"):
        audio_split(tmp_path, "train", [], train=True, max_sample_size=None, min_sample_size=0, random_crop=True,
                    seed=0, sample_rate=16000)
