"""SpeechT5 pieces without an oracle: consistent dropout, BART infilling, decoder causality and
padding, teacher-forcing inputs, generation, config errors."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from speechssl.nn.decoder import TransformerDecoder
from speechssl.upstream.speecht5.config import tiny
from speechssl.upstream.speecht5.denoise import text_infilling
from speechssl.upstream.speecht5.model import SpeechT5Model, shift_tokens_right, speech_decoder_inputs
from speechssl.upstream.speecht5.nets import consistent_dropout
from speechssl.upstream.speecht5.pretrain import SpeechT5PretrainModel


def test_consistent_dropout_shares_one_mask_and_keeps_1_minus_p():
    x = torch.ones(3, 200, 50)
    y = consistent_dropout(x, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(y[0], y[1]) and torch.equal(y[1], y[2])  # one mask for the batch
    kept = y[0] != 0
    assert abs(float(kept.float().mean()) - 0.7) < 0.02  # keep probability 1 - p (transformers: p)
    assert torch.allclose(y[0][kept], torch.full_like(y[0][kept], 1 / 0.7))
    assert torch.equal(consistent_dropout(x, 0.0), x)


def test_speech_prenet_dropout_in_eval_follows_the_config():
    torch.manual_seed(0)
    m = SpeechT5Model(tiny()).eval()
    mels = torch.randn(1, 6, 40)
    a, b = m.speech_decoder_prenet(mels), m.speech_decoder_prenet(mels)
    assert not torch.equal(a, b)  # Tacotron 2: dropout at inference too
    m.speech_decoder_prenet.in_eval = False
    assert torch.equal(m.speech_decoder_prenet(mels), m.speech_decoder_prenet(mels))


def test_text_infilling():
    tokens = torch.arange(10, 60).tolist() + [2]
    t = torch.tensor(tokens)
    out = text_infilling(t, mask_id=4, generator=torch.Generator().manual_seed(1), random_ratio=0.0, eos_id=2)
    again = text_infilling(t, mask_id=4, generator=torch.Generator().manual_seed(1), random_ratio=0.0, eos_id=2)
    assert torch.equal(out, again) and int(out[-1]) == 2
    kept = [v for v in out.tolist()[:-1] if v != 4]
    assert len(kept) == 50 - 15  # ceil(0.3 * 50) tokens covered
    assert kept == [v for v in tokens[:-1] if v in kept]  # order kept
    assert 1 <= (out == 4).sum() <= 15
    assert torch.equal(text_infilling(torch.tensor([2]), mask_id=4, generator=torch.Generator(), eos_id=2),
                       torch.tensor([2]))


def test_decoder_is_causal_and_padding_invariant():
    torch.manual_seed(0)
    dec = TransformerDecoder(16, 32, 2, 4, dropout=0.0, attention_dropout=0.0).eval()
    x, mem = torch.randn(2, 7, 16), torch.randn(2, 5, 16)
    with torch.no_grad():
        full = dec(x, None, mem)[-1]
        x2 = x.clone()
        x2[:, 4:] = 9.0  # the future
        assert torch.allclose(dec(x2, None, mem)[-1][:, :4], full[:, :4], atol=1e-6)
        lens, mlens = torch.tensor([7, 3]), torch.tensor([5, 2])
        batched = dec(x, lens, mem, mlens)[-1]
        alone = dec(x[1:, :3], None, mem[1:, :2])[-1]
        assert torch.allclose(batched[1, :3], alone[0], atol=1e-5)
        assert batched[1, 3:].abs().sum() == 0
        zero = dec(x, torch.tensor([7, 0]), mem, mlens)[-1]  # a length-0 row gives no NaN
        assert torch.isfinite(zero).all()


def test_teacher_forcing_inputs():
    tok = torch.tensor([[5, 6, 7, 2], [8, 2, 3, 3]])
    assert shift_tokens_right(tok, torch.tensor([4, 2]), 2, 3).tolist() == [[2, 5, 6, 7], [2, 8, 3, 3]]
    mels = torch.arange(10.0).view(1, 10, 1).repeat(2, 1, 1)
    inp, steps = speech_decoder_inputs(mels, torch.tensor([10, 7]), 2)
    assert inp[0, :, 0].tolist() == [0, 1, 3, 5, 7] and steps.tolist() == [5, 3]
    assert inp[1, 3:].abs().sum() == 0


def test_generation_runs():
    torch.manual_seed(0)
    m = SpeechT5Model(replace(tiny(), prenet_dropout_in_eval=False)).eval()
    ids = m.generate_text([torch.randn(4000), torch.randn(3000)], max_length=5)
    assert len(ids) == 2 and all(len(r) <= 5 for r in ids)
    mels = m.generate_speech(torch.tensor([[5, 6, 2]]), torch.tensor([3]), max_steps=4)
    assert mels[0].shape[1] == 40 and mels[0].shape[0] <= 8 and mels[0].shape[0] % 2 == 0


def test_config_errors():
    with pytest.raises(ValueError, match="vocab_size"):
        replace(tiny(), vocab_size=0).validate()
    with pytest.raises(ValueError, match="pad_token_id"):
        replace(tiny(), pad_token_id=99).validate()
    with pytest.raises(ValueError, match="codebook_mix_prob"):
        replace(tiny(), codebook_mix_prob=2.0).validate()
    with pytest.raises(ValueError, match="disables text_encoder"):
        SpeechT5PretrainModel(replace(tiny(), text_encoder=False), [8], [50.0])
    with pytest.raises(ValueError, match="no speech_decoder_prenet"):
        m = SpeechT5Model(replace(tiny(), speech_decoder=False))
        m.decode_speech(torch.zeros(1, 2, 40), torch.tensor([2]), None, None)
