"""Conv2dSubsampling / SubsampledFbank: the Conformer/w2v-BERT frame-rate-4 front end."""
from __future__ import annotations

import torch
from torch.nn import functional as F

from speechssl.nn.conv_subsampling import Conv2dSubsampling, SubsampledFbank, subsampled_frames
from speechssl.nn.fbank_stack import StackedFbank


def test_lengths_formula_matches_the_convolutions():
    m = Conv2dSubsampling(80, 4, 8)
    for T in range(7, 60):
        y, n = m(torch.randn(1, T, 80), torch.tensor([T]))
        assert y.shape[1] == n.item() == subsampled_frames(T) == ((T - 1) // 2 - 1) // 2
    assert subsampled_frames(6) == 0 and subsampled_frames(torch.tensor([3, 7, 11])).tolist() == [0, 1, 2]


def test_values_against_functional_convolutions():
    torch.manual_seed(0)
    m = Conv2dSubsampling(20, 3, 5)
    x = torch.randn(2, 17, 20)
    c1, c2 = m.conv[0], m.conv[2]
    h = F.relu(F.conv2d(x.unsqueeze(1), c1.weight, c1.bias, stride=2))
    h = F.relu(F.conv2d(h, c2.weight, c2.bias, stride=2))               # (B, C, T', F')
    B, C, T, Fq = h.shape
    flat = torch.stack([torch.cat([h[b, c, t] for c in range(C)]) for b in range(B) for t in range(T)])
    expect = (flat @ m.out.weight.T + m.out.bias).view(B, T, -1)        # channel-major flattening per frame
    y, _ = m(x, torch.tensor([17, 17]))
    torch.testing.assert_close(y, expect, rtol=1e-5, atol=1e-6)


def test_padded_row_equals_the_row_alone():
    torch.manual_seed(0)
    m = SubsampledFbank(80, 8, 16)
    a, b = 0.1 * torch.randn(16000), 0.1 * torch.randn(9000)
    x = torch.zeros(2, 16000)
    x[0], x[1, :9000] = a, b
    y, n = m(x, torch.tensor([16000, 9000]))
    alone, n_b = m(b.unsqueeze(0), torch.tensor([9000]))
    assert n[1] == n_b[0] and m.downsample_rate == 640
    torch.testing.assert_close(y[1, :n_b[0]], alone[0], rtol=1e-5, atol=1e-6)
    assert y[1, n_b[0]:].abs().max() == 0
    # one output frame per 4 fbank frames
    fb, nf = StackedFbank(80, 1)(x, torch.tensor([16000, 9000]))
    assert n.tolist() == [subsampled_frames(int(v)) for v in nf]
