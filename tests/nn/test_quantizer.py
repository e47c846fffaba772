"""Gumbel vector quantizer against transformers' Wav2Vec2GumbelVectorQuantizer (random small config, offline)."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from speechssl.nn.quantizer import GumbelVectorQuantizer, gumbel_softmax_hard, perplexity

D_IN, G, V, CODE = 12, 2, 7, 10


def _pair(seed: int = 0):
    """Ours and transformers' quantizer with the same weights (non-trivial, not fairseq's init)."""
    w2v = pytest.importorskip("transformers.models.wav2vec2.modeling_wav2vec2")
    from transformers import Wav2Vec2Config

    cfg = Wav2Vec2Config(conv_dim=(8, D_IN), conv_kernel=(3, 3), conv_stride=(2, 2), num_codevector_groups=G,
                         num_codevectors_per_group=V, codevector_dim=CODE, hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=16)
    torch.manual_seed(seed)
    ref = w2v.Wav2Vec2GumbelVectorQuantizer(cfg)
    ours = GumbelVectorQuantizer(D_IN, G, V, CODE, temperature=(2.0, 0.5, 0.9))
    with torch.no_grad():
        ref.codevectors.normal_()
        ref.weight_proj.weight.normal_()
        ref.weight_proj.bias.normal_()
        ours.vars.copy_(ref.codevectors)
        ours.weight_proj.load_state_dict(ref.weight_proj.state_dict())
    return ours, ref


def _inputs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 11, D_IN, generator=g)
    mask = torch.rand(3, 11, generator=g) < 0.4
    return x, mask


@pytest.mark.parametrize("use_mask", [False, True])
def test_eval_matches_transformers_exactly(use_mask):
    ours, ref = _pair()
    ours.eval(), ref.eval()
    x, mask = _inputs()
    m = mask if use_mask else None
    with torch.no_grad():
        q_ref, ppl_ref = ref(x, mask_time_indices=m)
        out = ours(x, mask=m)
    assert torch.equal(out.quantized, q_ref)
    # transformers' eval perplexity is over the argmax codes
    assert torch.equal(out.code_perplexity, ppl_ref)
    assert out.indices.shape == (3, 11, G) and out.indices.dtype == torch.int64
    book = ours.codebook()
    rebuilt = torch.cat([book[g][out.indices[..., g]] for g in range(G)], dim=-1)
    assert torch.equal(rebuilt, out.quantized)


@pytest.mark.parametrize("use_mask", [False, True])
def test_training_matches_transformers_with_the_same_noise(use_mask):
    ours, ref = _pair()
    ours.train(), ref.train()
    ours.set_num_updates(3)
    ref.temperature = ours.temperature
    assert ours.temperature == pytest.approx(2.0 * 0.9 ** 3)
    x, mask = _inputs()
    m = mask if use_mask else None
    x_ref = x.clone().requires_grad_(True)
    x_ours = x.clone().requires_grad_(True)
    torch.manual_seed(123)  # transformers draws from the global generator; ours from an explicit one
    q_ref, ppl_ref = ref(x_ref, mask_time_indices=m)
    out = ours(x_ours, mask=m, generator=torch.Generator().manual_seed(123))
    diff = (out.quantized - q_ref).abs().max().item()
    assert diff <= 1e-6, diff
    # the training perplexity is over the softmax (no noise): ours is prob_perplexity
    assert torch.equal(out.prob_perplexity, ppl_ref)
    # same noise -> same codes: indices recover the forward values
    book = ours.codebook()
    rebuilt = torch.cat([book[g][out.indices[..., g]] for g in range(G)], dim=-1)
    torch.testing.assert_close(rebuilt, out.quantized, rtol=0, atol=1e-6)
    # gradients through the straight-through estimator and the diversity loss agree
    num = G * V
    w = torch.randn_like(q_ref)
    ((q_ref * w).sum() + (num - ppl_ref) / num).backward()
    ((out.quantized * w).sum() + out.diversity_loss).backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.weight_proj.weight.grad, ref.weight_proj.weight.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.vars.grad, ref.codevectors.grad, rtol=1e-5, atol=1e-6)


def test_gumbel_softmax_hard_equals_torch_under_the_same_seed():
    logits = torch.randn(9, 5, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(7)
    ref = F.gumbel_softmax(logits, tau=0.7, hard=True)
    ours, idx = gumbel_softmax_hard(logits, 0.7, torch.Generator().manual_seed(7))
    assert torch.equal(ours, ref) and torch.equal(idx, ref.argmax(-1))


def test_temperature_schedule_and_updates():
    q = GumbelVectorQuantizer(4, 2, 3, 4, temperature=(2.0, 0.5, 0.5))
    assert q.temperature == 2.0
    for n, expected in [(1, 1.0), (2, 0.5), (10, 0.5)]:
        q.set_num_updates(n)
        assert q.temperature == expected
    with pytest.raises(ValueError, match="num_updates"):
        q.set_num_updates(-1)


def test_perplexity_bounds_and_diversity_loss():
    # uniform use of every code: perplexity G*V, diversity loss 0; one code: perplexity G
    uniform = torch.eye(V).repeat(2, 1).view(-1, 1, V).expand(-1, G, V).float()
    assert perplexity(uniform).item() == pytest.approx(G * V)
    one = torch.zeros(5, G, V)
    one[..., 2] = 1
    assert perplexity(one).item() == pytest.approx(G)
    assert perplexity(one, torch.zeros(5, dtype=torch.bool)).item() == pytest.approx(G)
    q = GumbelVectorQuantizer(D_IN, G, V, CODE).eval()
    out = q(torch.randn(2, 4, D_IN))
    assert 0 <= out.diversity_loss.item() <= 1 - 1 / V
    assert out.diversity_loss.item() == pytest.approx((G * V - out.prob_perplexity.item()) / (G * V))
    assert G <= out.code_perplexity.item() <= G * V and not out.code_perplexity.requires_grad


def test_combine_groups_shares_one_codebook():
    q = GumbelVectorQuantizer(D_IN, G, V, CODE, combine_groups=True).eval()
    assert q.vars.shape == (1, V, CODE // G)
    assert torch.equal(q.codebook()[0], q.codebook()[1])
    assert q(torch.randn(1, 3, D_IN)).quantized.shape == (1, 3, CODE)


def test_generator_makes_training_reproducible_and_global_rng_untouched():
    q = GumbelVectorQuantizer(D_IN, G, V, CODE).train()
    x = torch.randn(2, 6, D_IN)
    state = torch.get_rng_state()
    a = q(x, generator=torch.Generator().manual_seed(5))
    b = q(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.quantized, b.quantized) and torch.equal(a.indices, b.indices)
    assert math.isfinite(a.temperature)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="divisible"):
        GumbelVectorQuantizer(4, 3, 2, 4)
    with pytest.raises(ValueError, match="temperature"):
        GumbelVectorQuantizer(4, 2, 2, 4, temperature=(0.5, 2.0, 0.9))
    q = GumbelVectorQuantizer(4, 2, 2, 4)
    with pytest.raises(ValueError, match=r"\(B, T, 4\)"):
        q(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="mask"):
        q(torch.randn(2, 3, 4), mask=torch.ones(2, 4, dtype=torch.bool))
