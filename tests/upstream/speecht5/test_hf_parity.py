"""SpeechT5 against transformers' SpeechT5Model / SpeechT5ForSpeechToText / SpeechT5ForTextToSpeech
built from random small configs (offline), weights copied through the converter's key table.

Oracle bug, patched here: ``SpeechT5SpeechDecoderPrenet._consistent_dropout`` keeps units with
probability ``p`` instead of ``1 - p`` (right only at p = 0.5) and draws even in eval mode, so
the transformers pre-net is never deterministic; the tests replace it by the identity and run
ours with ``prenet_dropout_in_eval=False`` (our dropout itself is tested in test_model.py).
"""
from __future__ import annotations

import pytest
import torch

st5 = pytest.importorskip("transformers.models.speecht5.modeling_speecht5")

from transformers import (SpeechT5Config as HFConfig, SpeechT5ForSpeechToText,  # noqa: E402
                          SpeechT5ForTextToSpeech, SpeechT5Model as HFModel)

from speechssl.upstream.speecht5.convert import hf_key_table, hf_to_speechssl  # noqa: E402
from speechssl.upstream.speecht5.model import SpeechT5Model  # noqa: E402

TOL = 1e-4


def _hf_config(**kw) -> HFConfig:
    cfg = HFConfig(vocab_size=40, hidden_size=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                   decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, conv_dim=(16, 16, 16),
                   conv_stride=(5, 4, 2), conv_kernel=(10, 4, 2), num_conv_pos_embeddings=8,
                   num_conv_pos_embedding_groups=4, speech_decoder_prenet_units=24, speech_decoder_postnet_units=24,
                   num_mel_bins=8, speaker_embedding_dim=6, encoder_max_relative_position=6,
                   encoder_layerdrop=0.0, decoder_layerdrop=0.0, **kw)
    cfg._attn_implementation = "eager"
    return cfg


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if "alpha" in name else 0.1))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)


@pytest.fixture()
def no_hf_prenet_dropout(monkeypatch):
    monkeypatch.setattr(st5.SpeechT5SpeechDecoderPrenet, "_consistent_dropout", lambda self, x, p: x)


def _asr_pair():
    torch.manual_seed(0)
    hf = SpeechT5ForSpeechToText(_hf_config()).eval()
    _randomize(hf)
    cfg, state = hf_to_speechssl(hf.state_dict(), hf.config.to_dict())
    ours = SpeechT5Model(cfg).eval()
    ours.load_state_dict(state, strict=True)
    return hf, ours


def _wavs(lengths, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g) for n in lengths]


def test_speech_encoder_matches_speech_to_text_encoder():
    hf, ours = _asr_pair()
    wavs = _wavs([3200, 2400, 1600])
    with torch.no_grad():
        batched = ours(wavs)
        for i, w in enumerate(wavs):
            # transformers' group norm and position conv read padding: run it on each waveform alone
            ref = hf.speecht5.encoder(w[None], output_hidden_states=True).hidden_states
            n = int(batched["lengths"][i])
            assert n == ref[0].shape[1]
            assert len(ref) == len(batched["hidden_states"])
            for r, h in zip(ref, batched["hidden_states"]):
                assert (r[0] - h[i, :n]).abs().max() < TOL


def test_text_decoder_matches_speech_to_text_logits():
    hf, ours = _asr_pair()
    wavs = _wavs([2400, 2400])
    tokens = torch.tensor([[2, 5, 9, 11, 7, 4], [2, 8, 6, 1, 1, 1]])  # row 2 padded (pad id 1)
    lengths = torch.tensor([6, 3])
    mask = (torch.arange(6)[None] < lengths[:, None]).long()
    with torch.no_grad():
        ref = hf(input_values=torch.stack(wavs), decoder_input_ids=tokens, decoder_attention_mask=mask).logits
        enc = ours(wavs)
        got = ours.decode_text(tokens, lengths, enc["last_hidden_state"], enc["lengths"])
    valid = mask.bool()
    assert (ref[valid] - got[valid]).abs().max() < TOL


def test_shared_encoder_and_decoder_match_bare_speecht5model():
    """SpeechT5Model without pre-nets: encoder (relative keys, padded) and decoder (causal + cross)."""
    torch.manual_seed(0)
    hf = HFModel(_hf_config()).eval()
    _randomize(hf, seed=3)
    cfg, _ = hf_to_speechssl(SpeechT5ForSpeechToText(_hf_config()).state_dict(), _hf_config().to_dict())
    ours = SpeechT5Model(cfg).eval()
    sd = ours.state_dict()
    table = hf_key_table(cfg)
    for k, v in hf.state_dict().items():  # the bare model's keys lack the "speecht5." prefix
        sd[table["speecht5." + k]] = v
    ours.load_state_dict(sd, strict=True)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 20, 32, generator=g)  # 20 > 2 * max distance: clamping exercised
    xl = torch.tensor([20, 13, 5])
    y = torch.randn(3, 9, 32, generator=g)
    yl = torch.tensor([9, 4, 7])
    xm = (torch.arange(20)[None] < xl[:, None]).long()
    ym = (torch.arange(9)[None] < yl[:, None]).long()
    with torch.no_grad():
        ref = hf(input_values=x, attention_mask=xm, decoder_input_values=y, decoder_attention_mask=ym,
                 output_hidden_states=True)
        enc = ours.encode_embedded(x, xl)
        dec = ours.decoder(y, yl, enc[-1], xl)
    for r, h in zip(ref.encoder_hidden_states, enc):
        assert (r - h)[xm.bool()].abs().max() < TOL
    for r, h in zip(ref.decoder_hidden_states, dec):
        assert (r - h)[ym.bool()].abs().max() < TOL


def test_text_to_speech_matches(no_hf_prenet_dropout):
    torch.manual_seed(0)
    hf = SpeechT5ForTextToSpeech(_hf_config()).eval()
    _randomize(hf, seed=7)
    base, _ = hf_to_speechssl(SpeechT5ForSpeechToText(_hf_config()).state_dict(), _hf_config().to_dict())
    from dataclasses import replace
    cfg = replace(base, text_encoder=True, text_decoder=False, speech_decoder=True, speaker_embedding_dim=6,
                  prenet_dropout_in_eval=False)
    ours = SpeechT5Model(cfg).eval()
    sd = ours.state_dict()
    table = hf_key_table(cfg)
    hf_sd = hf.state_dict()
    assert set(hf_sd) <= set(table), sorted(set(hf_sd) - set(table))
    for k, v in hf_sd.items():
        sd[table[k]] = v
    ours.load_state_dict(sd, strict=True)
    g = torch.Generator().manual_seed(9)
    tokens = torch.tensor([[5, 9, 11, 7, 4, 2], [8, 6, 2, 1, 1, 1]])
    tl = torch.tensor([6, 3])
    tm = (torch.arange(6)[None] < tl[:, None]).long()
    mels = torch.randn(2, 5, 8, generator=g)
    spk = torch.randn(2, 6, generator=g)
    with torch.no_grad():
        out = hf.speecht5(input_values=tokens, attention_mask=tm, decoder_input_values=mels,
                          speaker_embeddings=spk, output_hidden_states=True)
        before, after, stop = hf.speech_decoder_postnet(out.last_hidden_state)
        enc = ours.encode_text(tokens, tl)
        b2, a2, s2 = ours.decode_speech(mels, torch.tensor([5, 5]), enc[-1], tl, spk)
    for r, h in zip(out.encoder_hidden_states, enc):
        assert (r - h)[tm.bool()].abs().max() < TOL
    assert (before - b2).abs().max() < TOL
    assert (after - a2).abs().max() < TOL
    assert (stop - s2).abs().max() < TOL
