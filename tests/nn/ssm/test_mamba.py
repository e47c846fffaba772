"""Mamba mixer/block: parity with transformers' MambaModel, bidirectional padding, init facts."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from speechssl.nn.ssm.mamba import DropPath, MambaBlock, MambaMixer, causal_depthwise_conv, reverse_padded
from speechssl.nn.ssm.scan_native import native_available

from .tolerance import assert_close

transformers = pytest.importorskip("transformers")

PARITY_TOL = 1e-4  # absolute, float32 (the bar)


def _hf_model(hidden: int = 32, state: int = 8, layers: int = 2, seed: int = 0):
    cfg = transformers.MambaConfig(vocab_size=11, hidden_size=hidden, state_size=state, num_hidden_layers=layers,
                                   expand=2, conv_kernel=4, use_bias=False, use_conv_bias=True,
                                   layer_norm_epsilon=1e-5, residual_in_fp32=True, time_step_rank="auto")
    torch.manual_seed(seed)
    model = transformers.MambaModel(cfg).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():   # randomise every parameter so that no term can hide behind an init constant
        for name, p in model.named_parameters():
            if name.endswith("A_log"):
                p.copy_(torch.log(torch.rand(p.shape, generator=gen) * 4 + 0.5))
            elif name.endswith("dt_proj.bias"):
                p.copy_(torch.rand(p.shape, generator=gen) * 3 - 5)
            elif name.endswith("norm.weight") or name.endswith("norm_f.weight"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * (0.5 / math.sqrt(max(p.shape[-1], 1))))
    return model, cfg


def _copy_mixer(ours: MambaMixer, theirs: nn.Module, suffix: str = "") -> None:
    """transformers MambaMixer → our mixer (direction ``suffix``), by explicit name table."""
    table = {"conv1d.weight": f"conv1d{suffix}.weight", "conv1d.bias": f"conv1d{suffix}.bias",
             "x_proj.weight": f"x_proj{suffix}.weight", "dt_proj.weight": f"dt_proj{suffix}.weight",
             "dt_proj.bias": f"dt_proj{suffix}.bias", "A_log": "A_log" if not suffix else "A_b_log",
             "D": f"D{suffix}"}
    if not suffix:
        table.update({"in_proj.weight": "in_proj.weight", "out_proj.weight": "out_proj.weight"})
    ours_params = dict(ours.named_parameters())
    theirs_params = dict(theirs.named_parameters())
    assert set(theirs_params) == set(table) | ({"in_proj.weight", "out_proj.weight"} if suffix else set())
    with torch.no_grad():
        for src, dst in table.items():
            ours_params[dst].copy_(theirs_params[src])


def test_mamba_blocks_match_transformers_mamba_model() -> None:
    model, cfg = _hf_model()
    blocks = nn.ModuleList([
        MambaBlock(cfg.hidden_size, norm="rms", norm_eps=cfg.layer_norm_epsilon, d_state=cfg.state_size,
                   d_conv=cfg.conv_kernel, expand=cfg.expand, dt_rank=cfg.time_step_rank, bias=False,
                   conv_bias=True)
        for _ in range(cfg.num_hidden_layers)])
    norm_f = nn.RMSNorm(cfg.hidden_size, eps=cfg.layer_norm_epsilon)
    with torch.no_grad():
        for ours, theirs in zip(blocks, model.layers):
            ours.norm.weight.copy_(theirs.norm.weight)
            _copy_mixer(ours.mixer, theirs.mixer)
        norm_f.weight.copy_(model.norm_f.weight)

    x = torch.randn(2, 37, cfg.hidden_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(inputs_embeds=x, output_hidden_states=True, use_cache=False)
        h = x
        hiddens = [h]
        for block in blocks:
            h = block(h)
            hiddens.append(h)
        out = norm_f(h)
    # transformers: hidden_states = (layer 1 output, ..., layer L output, norm_f(layer L output))
    assert len(ref.hidden_states) == cfg.num_hidden_layers + 1
    for i, (a, b) in enumerate(zip(hiddens[1:], ref.hidden_states[:-1])):
        assert (a - b).abs().max().item() <= PARITY_TOL, f"layer {i + 1} output"
    diff = (out - ref.last_hidden_state).abs().max().item()
    assert diff <= PARITY_TOL, diff


@pytest.mark.parametrize("impl", ["chunked", "native", "ref"])
def test_bidirectional_mixer_equals_two_transformers_mixers(impl: str) -> None:
    """Vim "v2": out_proj((y_fwd + flip(y_bwd(flip x))) / 2) = mean of two one-way mixers (out_proj is linear)."""
    if impl == "native" and not native_available():
        pytest.skip("native selective-scan kernel unavailable")
    model_f, cfg = _hf_model(seed=0, layers=1)
    model_b, _ = _hf_model(seed=5, layers=1)
    fwd, bwd = model_f.layers[0].mixer, model_b.layers[0].mixer
    with torch.no_grad():
        bwd.in_proj.weight.copy_(fwd.in_proj.weight)
        bwd.out_proj.weight.copy_(fwd.out_proj.weight)
    ours = MambaMixer(cfg.hidden_size, d_state=cfg.state_size, d_conv=cfg.conv_kernel, expand=cfg.expand,
                      dt_rank=cfg.time_step_rank, bidirectional=True, divide_out=True, scan_impl=impl)
    _copy_mixer(ours, fwd)
    _copy_mixer(ours, bwd, "_b")
    x = torch.randn(3, 21, cfg.hidden_size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = (fwd(x) + bwd(x.flip(1)).flip(1)) / 2
        got = ours(x)
    assert (got - expected).abs().max().item() <= PARITY_TOL


def test_bidirectional_padding_does_not_leak() -> None:
    torch.manual_seed(0)
    block = MambaBlock(16, d_state=4, bidirectional=True).eval()
    gen = torch.Generator().manual_seed(1)
    lengths = torch.tensor([19, 11, 1])
    seqs = [torch.randn(int(n), 16, generator=gen) for n in lengths]
    batch = torch.randn(3, 19, 16, generator=gen) * 100      # garbage in the padding
    for i, s in enumerate(seqs):
        batch[i, : len(s)] = s
    with torch.no_grad():
        out = block(batch, lengths)
        for i, s in enumerate(seqs):
            alone = block(s.unsqueeze(0), lengths[i:i + 1])
            assert_close(out[i, : len(s)], alone[0], torch.float32, f"item {i}")


def test_reverse_padded() -> None:
    x = torch.arange(10.).view(2, 5, 1)
    y = reverse_padded(x, torch.tensor([5, 3]))
    assert y[:, :, 0].tolist() == [[4, 3, 2, 1, 0], [7, 6, 5, 8, 9]]
    assert torch.equal(reverse_padded(y, torch.tensor([5, 3])), x)
    assert torch.equal(reverse_padded(x, None), x.flip(1))


def test_causal_depthwise_conv_equals_conv1d() -> None:
    torch.manual_seed(0)
    conv = nn.Conv1d(6, 6, 4, groups=6, padding=3)
    x = torch.randn(2, 9, 6)
    expected = conv(x.transpose(1, 2))[..., :9].transpose(1, 2)
    assert_close(causal_depthwise_conv(x, conv.weight, conv.bias), expected, torch.float32)


def test_mixer_initialisation_follows_mamba_ssm() -> None:
    torch.manual_seed(0)
    mixer = MambaMixer(48, d_state=16, expand=2, bidirectional=True, dt_min=0.001, dt_max=0.1)
    assert mixer.d_inner == 96 and mixer.dt_rank == 3
    expected_A_log = torch.log(torch.arange(1, 17.)).repeat(96, 1)
    for A_log, D, dt_proj in ((mixer.A_log, mixer.D, mixer.dt_proj), (mixer.A_b_log, mixer.D_b, mixer.dt_proj_b)):
        assert torch.equal(A_log.data, expected_A_log)
        assert torch.equal(D.data, torch.ones(96))
        dt = torch.nn.functional.softplus(dt_proj.bias.data)
        assert dt.min() >= 0.001 * 0.999 and dt.max() <= 0.1 * 1.001
        bound = 3 ** -0.5
        assert dt_proj.weight.abs().max() <= bound
    assert mixer.out_proj.bias is None and mixer.in_proj.bias is None


def test_block_gradients_flow_and_drop_path() -> None:
    torch.manual_seed(0)
    block = MambaBlock(8, d_state=4, bidirectional=True, drop_path=0.5)
    x = torch.randn(4, 7, 8, requires_grad=True)
    block.train()
    block(x, torch.tensor([7, 6, 5, 1])).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in block.parameters())
    block.eval()
    torch.testing.assert_close(block(x), block(x))
    with pytest.raises(ValueError, match="drop path"):
        DropPath(1.0)
    with pytest.raises(ValueError, match="norm"):
        MambaBlock(8, norm="batch")  # type: ignore[arg-type]


def test_activation_checkpointing_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    plain = MambaBlock(8, d_state=4, bidirectional=True)
    ckpt = MambaBlock(8, d_state=4, bidirectional=True, checkpoint=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(3, 11, 8)
    lengths = torch.tensor([11, 7, 2])
    grads = []
    for block in (plain, ckpt):
        xi = x.clone().requires_grad_()
        out = block(xi, lengths)
        (out * torch.arange(out.numel()).view_as(out).sin()).sum().backward()
        grads.append([xi.grad] + [p.grad for p in block.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
