"""MLPHead against the layer-by-layer formula, in each of the variants the methods use."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from speechssl.nn.mlp import MLPHead


def _reference(head: MLPHead, x: torch.Tensor, activation) -> torch.Tensor:
    """The head by hand: F.linear / F.batch_norm (batch statistics) / activation per layer."""
    mods = list(head.net)
    for m in mods:
        if isinstance(m, torch.nn.Linear):
            x = F.linear(x, m.weight, m.bias)
        elif isinstance(m, torch.nn.BatchNorm1d):
            mean, var = x.mean(0), x.var(0, unbiased=False)
            x = (x - mean) / torch.sqrt(var + m.eps) * m.weight + m.bias
        else:
            x = activation(x)
    return x


@pytest.mark.parametrize("batch_norm,activation,fn", [(False, "relu", F.relu), (True, "relu", F.relu),
                                                      (True, "gelu", F.gelu)])
def test_values_match_the_formula(batch_norm, activation, fn):
    torch.manual_seed(0)
    head = MLPHead(8, 16, 4, layers=3, batch_norm=batch_norm, activation=activation).train()
    with torch.no_grad():
        for m in head.net:
            if isinstance(m, torch.nn.BatchNorm1d):  # non-trivial affine so the BN term is tested
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    x = torch.randn(6, 8)
    torch.testing.assert_close(head(x), _reference(head, x, fn), rtol=1e-5, atol=1e-6)


def test_layer_layout_and_parameter_names():
    v1 = MLPHead(8, 16, 4, layers=2, batch_norm=False)
    assert [type(m).__name__ for m in v1.net] == ["Linear", "ReLU", "Linear"] and v1.net[0].bias is not None
    v2 = MLPHead(8, 16, 4, layers=3, batch_norm=True)
    assert [type(m).__name__ for m in v2.net] == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU",
                                                  "Linear"]
    assert v2.net[0].bias is None and v2.net[3].bias is None and v2.net[6].bias is not None  # BN shifts instead
    dino = MLPHead(8, 16, 4, layers=3, activation="gelu", hidden_bias=True, init="trunc_normal")
    assert [type(m).__name__ for m in dino.net][2] == "GELU" and dino.net[0].bias is not None
    assert sorted(dict(dino.named_parameters())) == sorted(
        ["net.0.weight", "net.0.bias", "net.1.weight", "net.1.bias", "net.3.weight", "net.3.bias", "net.4.weight",
         "net.4.bias", "net.6.weight", "net.6.bias"])
    single = MLPHead(8, 16, 4, layers=1)
    assert [type(m).__name__ for m in single.net] == ["Linear"]


def test_trunc_normal_init():
    torch.manual_seed(0)
    head = MLPHead(256, 512, 128, layers=3, init="trunc_normal", hidden_bias=True)
    for m in head.net:
        if isinstance(m, torch.nn.Linear):
            assert float(m.weight.abs().max()) <= 2.0 + 1e-6  # truncated at ±2 (absolute, as timm / DINO)
            assert abs(float(m.weight.std()) - 0.02) < 0.002
            assert torch.count_nonzero(m.bias) == 0


def test_bad_options():
    with pytest.raises(ValueError, match=">= 1 linear layer"):
        MLPHead(8, 16, 4, layers=0)
    with pytest.raises(ValueError, match="activation"):
        MLPHead(8, 16, 4, activation="tanh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="init"):
        MLPHead(8, 16, 4, init="xavier")  # type: ignore[arg-type]
