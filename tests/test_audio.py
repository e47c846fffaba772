"""speechssl.audio: load/save/info, and every bad-file error names the file."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from speechssl import audio
from speechssl.audio import AudioError


def _sine(n: int = 16000, f: float = 440.0, sr: int = 16000, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * f * np.arange(n) / sr)).astype(np.float32)


def test_save_load_roundtrip_pcm16(tmp_path):
    x = _sine()
    path = tmp_path / "a.wav"
    audio.save(path, torch.from_numpy(x))
    y = audio.load(path)
    assert y.dtype == torch.float32 and y.shape == (16000,)
    assert float((y - torch.from_numpy(x)).abs().max()) <= 1 / 32768 + 1e-7
    meta = audio.info(path)
    assert (meta.sample_rate, meta.num_samples, meta.num_channels, meta.subtype) == (16000, 16000, 1, "PCM_16")
    assert meta.duration == pytest.approx(1.0)
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]  # no temporary file left


def test_save_is_deterministic_and_flac(tmp_path):
    x = _sine(8000, 220.0)
    audio.save(tmp_path / "a.wav", x)
    audio.save(tmp_path / "b.wav", x)
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    audio.save(tmp_path / "c.flac", x)
    assert audio.info(tmp_path / "c.flac").format == "FLAC"
    np.testing.assert_allclose(audio.load(tmp_path / "c.flac").numpy(), x, atol=1 / 32768 + 1e-7)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 100), np.float32), "shape"),
    (np.zeros(0, np.float32), "empty"),
    (np.array([0.1, np.nan], np.float32), "NaN"),
    (np.array([0.1, 1.5], np.float32), "outside"),
])
def test_save_rejects_bad_waveforms(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        audio.save(tmp_path / "x.wav", bad)
    assert not list(tmp_path.iterdir())


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        audio.load(tmp_path / "nope.wav")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    soundfile.write(path, np.zeros(0, np.float32), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match=r"empty\.wav.*empty"):
        audio.load(path)


def test_nan_file(tmp_path):
    path = tmp_path / "nan.wav"
    x = _sine(1000)
    x[500] = np.nan
    soundfile.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav.*NaN.*sample 500"):
        audio.load(path)


def test_inf_file(tmp_path):
    path = tmp_path / "inf.wav"
    x = _sine(1000)
    x[10] = np.inf
    soundfile.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"inf\.wav.*infinite"):
        audio.load(path)


def test_truncated_wav(tmp_path):
    good = tmp_path / "good.wav"
    audio.save(good, _sine())
    data = good.read_bytes()
    bad = tmp_path / "cut.wav"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match=r"cut\.wav.*truncated"):
        audio.load(bad)
    with pytest.raises(AudioError, match="truncated"):
        audio.info(bad)


def test_truncated_flac(tmp_path):
    good = tmp_path / "good.flac"
    audio.save(good, (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32))
    data = good.read_bytes()
    bad = tmp_path / "cut.flac"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match=r"cut\.flac"):
        audio.load(bad)


def test_unreadable_file(tmp_path):
    path = tmp_path / "junk.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00this is not audio at all")
    with pytest.raises(AudioError, match=r"junk\.wav.*not a readable audio file"):
        audio.load(path)


def test_wrong_rate_names_rates_and_fix(tmp_path):
    path = tmp_path / "44k.wav"
    soundfile.write(path, _sine(44100, 440.0, 44100), 44100, subtype="PCM_16")
    with pytest.raises(AudioError, match=r"44k\.wav.*44100 Hz.*16000 Hz.*speechssl audio prepare SRC DST --sample-rate 16000"):
        audio.load(path)


def test_resample_on_request(tmp_path):
    path = tmp_path / "22k.wav"
    soundfile.write(path, _sine(22050, 440.0, 22050), 22050, subtype="PCM_16")
    y = audio.load(path, resample=True).numpy()
    assert y.shape == (16000,)
    # the tone is still at 440 Hz after resampling
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert np.fft.rfftfreq(len(y), 1 / 16000)[spec.argmax()] == pytest.approx(440.0, abs=1.0)
    # and is the same tone sampled at 16 kHz (ideal band-limited resampling, no delay)
    np.testing.assert_allclose(y[1000:-1000], _sine(16000, 440.0, 16000)[1000:-1000], atol=2e-3)


def test_multichannel(tmp_path):
    path = tmp_path / "stereo.wav"
    left, right = _sine(1600, 300.0), _sine(1600, 500.0, amp=0.25)
    soundfile.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"stereo\.wav.*2 channels.*speechssl audio prepare SRC DST --mono mean"):
        audio.load(path)
    np.testing.assert_allclose(audio.load(path, mono="mean").numpy(), (left + right) / 2, atol=1e-6)
    np.testing.assert_allclose(audio.load(path, mono="first").numpy(), left, atol=1e-7)
