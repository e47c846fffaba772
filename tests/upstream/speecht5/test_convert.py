"""`speechssl hub convert --from hf` for transformers SpeechT5 directories and the HF → speechssl → HF round trip."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from speechssl import hub  # noqa: E402
from speechssl._hub.modeldir import HubError  # noqa: E402
from speechssl.cli import main  # noqa: E402
from tests.upstream.speecht5.test_hf_parity import TOL, _hf_config, _randomize, _wavs  # noqa: E402


def _save(model, path: Path) -> Path:
    model.save_pretrained(path, safe_serialization=True)
    return path


@pytest.mark.parametrize("cls_name", ["SpeechT5ForSpeechToText", "SpeechT5ForSpeechToSpeech"])
def test_hf_speechssl_hf_round_trip(tmp_path: Path, cls_name: str) -> None:
    cls = getattr(transformers, cls_name)
    torch.manual_seed(0)
    hf = cls(_hf_config()).eval()
    _randomize(hf)
    src = _save(hf, tmp_path / "hf")
    assert main(["hub", "convert", str(src), str(tmp_path / "ours"), "--from", "hf"]) == 0
    ours = hub.load(tmp_path / "ours")
    assert ours.method == "speecht5" and ours.config.text_encoder is False
    assert ours.config.text_decoder == (cls_name == "SpeechT5ForSpeechToText")
    wav = _wavs([2400])[0]
    with torch.no_grad():
        ref = hf.speecht5.encoder(wav[None], output_hidden_states=True).hidden_states
        got = ours([wav])["hidden_states"]
    assert max(float((r - g).abs().max()) for r, g in zip(ref, got)) < TOL
    back = hub.convert(tmp_path / "ours", tmp_path / "back", to="hf")
    again = cls.from_pretrained(back).eval()
    a, b = hf.state_dict(), again.state_dict()
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_text_to_speech_directory_is_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = _save(transformers.SpeechT5ForTextToSpeech(_hf_config()), tmp_path / "tts")
    with pytest.raises(HubError, match="no speech encoder pre-net"):
        hub.convert(src, tmp_path / "ours")


def test_pretrained_model_exports_as_speech_to_text(tmp_path: Path) -> None:
    """A model with every part exports its speech encoder + text decoder; the rest is dropped."""
    from speechssl.upstream.speecht5.config import tiny
    from speechssl.upstream.speecht5.model import SpeechT5Model

    torch.manual_seed(0)
    ours = SpeechT5Model(tiny()).eval()
    hub.save(ours, tmp_path / "ours")
    out = hub.convert(tmp_path / "ours", tmp_path / "hf", to="hf")
    hf = transformers.SpeechT5ForSpeechToText.from_pretrained(out).eval()
    wav = _wavs([4000])[0]
    tokens = torch.tensor([[2, 5, 9, 11]])
    with torch.no_grad():
        enc = ours([wav])
        got = ours.decode_text(tokens, torch.tensor([4]), enc["last_hidden_state"], enc["lengths"])
        ref = hf(input_values=wav[None], decoder_input_ids=tokens).logits
    assert float((ref - got).abs().max()) < TOL
