"""run_frozen: equals a plain no-grad forward, restores modes, selects layers, chunks like fairseq."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from speechssl.nn.frozen import chunk_bounds, eval_mode, model_device, run_frozen


class _Upstream(nn.Module):
    """Upstream-contract stub: strided conv (kernel = stride = 160) + dropout + linear."""

    downsample_rate = 160

    def __init__(self, hidden_sizes=(4, 3)) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, kernel_size=160, stride=160)
        self.drop = nn.Dropout(0.5)
        self.proj = nn.Linear(4, 3)
        self.hidden_sizes = list(hidden_sizes)
        self.calls: list[list[int]] = []

    def forward(self, wavs):
        self.calls.append([len(w) for w in wavs])
        lengths = torch.tensor([len(w) // 160 for w in wavs], device=wavs[0].device)
        batch = nn.utils.rnn.pad_sequence(list(wavs), batch_first=True)
        h0 = self.drop(self.conv(batch.unsqueeze(1)).transpose(1, 2))  # (B, T, 4)
        return {"hidden_states": [h0, torch.tanh(self.proj(h0))], "lengths": lengths}


def _wavs(*sizes: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(n, generator=g) for n in sizes]


def test_equals_plain_forward_in_eval_and_restores_modes():
    torch.manual_seed(0)
    model = _Upstream().train()
    model.proj.eval()  # a submodule with its own mode must keep it
    wavs = _wavs(1600, 1000, 480)
    hidden, lengths = run_frozen(model, wavs)
    assert model.training and model.drop.training and not model.proj.training
    with torch.no_grad():
        ref = model.eval()(wavs)
    assert lengths.tolist() == [10, 6, 3] and lengths.dtype == torch.int64
    for a, b in zip(hidden, ref["hidden_states"]):
        assert torch.equal(a, b)
    assert not hidden[0].requires_grad and not hidden[0].is_inference()  # usable as a head's input


def test_padded_batch_equals_list_and_layers():
    torch.manual_seed(0)
    model = _Upstream().eval()
    wavs = _wavs(1600, 700)
    padded = nn.utils.rnn.pad_sequence(wavs, batch_first=True)
    a, la = run_frozen(model, wavs, layers=[-1])
    b, lb = run_frozen(model, padded, torch.tensor([1600, 700]), layers=[1])
    assert len(a) == 1 and a[0].shape == (2, 10, 3) and torch.equal(la, lb)
    assert torch.equal(a[0], b[0])
    assert model.calls[-1] == [1600, 700]  # padding was cut off before the model saw it
    with pytest.raises(ValueError, match="layer 2 does not exist"):
        run_frozen(model, wavs, layers=[2])
    with pytest.raises(ValueError, match="lengths is only for a padded"):
        run_frozen(model, wavs, lengths=[1, 2])


def test_declared_hidden_sizes_are_checked():
    with pytest.raises(RuntimeError, match="returned 2 hidden states but declares 3"):
        run_frozen(_Upstream(hidden_sizes=(4, 3, 3)), _wavs(320))


def test_chunk_bounds_like_fairseq():
    assert chunk_bounds(1000, 480, 160) == [0, 480, 1000]  # the 40-sample tail joins the last chunk
    assert chunk_bounds(1300, 480, 160) == [0, 480, 960, 1300]
    assert chunk_bounds(300, 480, 160) == [0, 300]
    with pytest.raises(ValueError, match="multiple of the downsample rate"):
        chunk_bounds(1000, 500, 160)


def test_chunked_equals_whole_when_field_equals_stride():
    torch.manual_seed(0)
    model = _Upstream().eval()
    wavs = _wavs(5000, 1000, 170)
    whole, lw = run_frozen(model, wavs)
    model.calls.clear()
    chunked, lc = run_frozen(model, wavs, max_chunk=1000)  # rounded down to 960
    assert model.calls == [[960], [960], [960], [960], [1160], [1000], [170]]  # one chunk per call
    assert torch.equal(lw, lc)
    for a, b in zip(whole, chunked):
        assert b.shape[1] == max(lw.tolist())
        for row, m in enumerate(lw.tolist()):
            torch.testing.assert_close(a[row, :m], b[row, :m], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="shorter than one frame"):
        run_frozen(model, wavs, max_chunk=100)


def test_amp_dtype_and_device():
    torch.manual_seed(0)
    model = _Upstream().eval()
    hidden, _ = run_frozen(model, _wavs(640), amp_dtype=torch.bfloat16, device="cpu")
    assert hidden[0].dtype == torch.bfloat16
    assert model_device(model) == torch.device("cpu") and model_device(nn.ReLU(), "meta") == torch.device("meta")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_moves_model_to_device_gpu():
    torch.manual_seed(0)
    model = _Upstream().eval()
    hidden, lengths = run_frozen(model, _wavs(640), device="cuda")
    assert model_device(model).type == "cuda" and hidden[0].is_cuda and lengths.is_cuda


def test_eval_mode_context_restores_on_error():
    model = _Upstream().train()
    with pytest.raises(KeyError):
        with eval_mode(model):
            assert not model.training
            raise KeyError("boom")
    assert model.training and model.drop.training
