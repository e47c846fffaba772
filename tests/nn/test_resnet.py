"""speechssl.nn.resnet: parity with transformers' ResNet (ImageNet stem), a functional reference (CIFAR stem),
the token grid of the image upstream contract, batch invariance and input errors.

torchvision is not an oracle here: its PyPI wheels are built against CUDA torch, and with torch 2.13 CPU
``import torchvision`` fails (``operator torchvision::nms does not exist``). transformers'
``ResNetModel`` with ``layer_type="basic"`` is the same network as torchvision's ``resnet18`` trunk
(7x7/2 conv, BN, ReLU, 3x3/2 max-pool, basic blocks with the stride on the first conv and a 1x1 conv +
BN shortcut), so it is the parity oracle.
"""
from __future__ import annotations

import re

import pytest
import torch
from torch.nn import functional as F

from speechssl.nn.resnet import ResNet

TOL = 1e-5


def _randomize_bn(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Random BN affine parameters and running statistics, so eval-mode parity tests them."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=gen) + 0.5
            m.bias.data = torch.randn(n, generator=gen) * 0.1
            m.running_mean = torch.randn(n, generator=gen) * 0.1
            m.running_var = torch.rand(n, generator=gen) + 0.5


_HF_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"


def hf_to_ours(key: str) -> str:
    """transformers ``ResNetModel`` key → :class:`ResNet` key (the test's own table)."""
    rules = [
        (rf"^embedder\.embedder\.convolution\.weight$", "stem.0.weight"),
        (rf"^embedder\.embedder\.normalization\.{_HF_BN}$", r"stem.1.\1"),
        (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.0\.convolution\.weight$", r"stages.\1.\2.conv1.weight"),
        (rf"^encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.0\.normalization\.{_HF_BN}$", r"stages.\1.\2.bn1.\3"),
        (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.1\.convolution\.weight$", r"stages.\1.\2.conv2.weight"),
        (rf"^encoder\.stages\.(\d+)\.layers\.(\d+)\.layer\.1\.normalization\.{_HF_BN}$", r"stages.\1.\2.bn2.\3"),
        (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.convolution\.weight$", r"stages.\1.\2.shortcut.0.weight"),
        (rf"^encoder\.stages\.(\d+)\.layers\.(\d+)\.shortcut\.normalization\.{_HF_BN}$",
         r"stages.\1.\2.shortcut.1.\3"),
    ]
    for pattern, repl in rules:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    raise KeyError(key)


@pytest.mark.parametrize("geometry", [
    dict(widths=(64, 128, 256, 512), depths=(2, 2, 2, 2), size=32),  # ResNet-18
    dict(widths=(8, 16, 24), depths=(1, 3, 2), size=48, stem_width=12),
])
def test_imagenet_stem_matches_transformers_resnet(geometry):
    transformers = pytest.importorskip("transformers")
    widths, depths, size = geometry["widths"], geometry["depths"], geometry["size"]
    stem_width = geometry.get("stem_width", widths[0])
    hf_cfg = transformers.ResNetConfig(num_channels=3, embedding_size=stem_width, hidden_sizes=list(widths),
                                       depths=list(depths), layer_type="basic", hidden_act="relu",
                                       downsample_in_first_stage=False)
    torch.manual_seed(0)
    hf = transformers.ResNetModel(hf_cfg)
    gen = torch.Generator().manual_seed(1)
    _randomize_bn(hf, gen)
    ours = ResNet(size, 3, widths, depths, stem="imagenet", stem_width=stem_width)
    state = {hf_to_ours(k): v for k, v in hf.state_dict().items()}
    ours.load_state_dict(state, strict=True)
    x = torch.rand(3, 3, size, size, generator=gen)
    for mode in ("eval", "train"):  # eval: running statistics; train: batch statistics
        hf.train(mode == "train")
        ours.train(mode == "train")
        with torch.no_grad():
            ref = hf(pixel_values=x, output_hidden_states=True).hidden_states
            got = ours.feature_maps(x)
        assert len(got) == len(ref) == len(widths) + 1
        for i, (a, b) in enumerate(zip(got, ref)):
            assert a.shape == b.shape, (i, a.shape, b.shape)
            diff = float((a - b).abs().max())
            assert diff <= TOL * max(1.0, float(b.abs().max())), f"{mode} state {i}: max diff {diff}"


def _ref_block(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str, stride: int, eps: float) -> torch.Tensor:
    def bn(y: torch.Tensor, q: str) -> torch.Tensor:
        return F.batch_norm(y, sd[q + ".running_mean"], sd[q + ".running_var"], sd[q + ".weight"], sd[q + ".bias"],
                            training=False, eps=eps)

    y = F.relu(bn(F.conv2d(x, sd[p + ".conv1.weight"], stride=stride, padding=1), p + ".bn1"))
    y = bn(F.conv2d(y, sd[p + ".conv2.weight"], padding=1), p + ".bn2")
    if p + ".shortcut.0.weight" in sd:
        x = bn(F.conv2d(x, sd[p + ".shortcut.0.weight"], stride=stride), p + ".shortcut.1")
    return F.relu(y + x)


def test_cifar_stem_matches_a_functional_reference():
    torch.manual_seed(0)
    model = ResNet(32, 3, (16, 32, 64), (2, 2, 1), stem="cifar").eval()
    gen = torch.Generator().manual_seed(2)
    _randomize_bn(model, gen)
    sd = model.state_dict()
    x = torch.rand(2, 3, 32, 32, generator=gen)
    eps = 1e-5
    h = F.conv2d(x, sd["stem.0.weight"], stride=1, padding=1)
    h = F.relu(F.batch_norm(h, sd["stem.1.running_mean"], sd["stem.1.running_var"], sd["stem.1.weight"],
                            sd["stem.1.bias"], training=False, eps=eps))
    ref = [h]
    for s, depth in enumerate((2, 2, 1)):
        for b in range(depth):
            h = _ref_block(h, sd, f"stages.{s}.{b}", 2 if (s > 0 and b == 0) else 1, eps)
        ref.append(h)
    with torch.no_grad():
        got = model.feature_maps(x)
    assert [tuple(m.shape) for m in got] == [(2, 16, 32, 32), (2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8)]
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, atol=TOL, rtol=TOL)


def test_tokens_follow_the_image_contract():
    torch.manual_seed(0)
    model = ResNet(32, 3, (8, 16, 32), (1, 1, 1), stem="cifar").eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
        maps = model.feature_maps(x)
    assert model.strides == [1, 1, 2, 4] and model.patch_grid == (8, 8)
    assert [tuple(h.shape) for h in out["hidden_states"]] == [(2, 64, 8), (2, 64, 8), (2, 64, 16), (2, 64, 32)]
    assert out["lengths"].tolist() == [64, 64] and out["patch_grid"] == (8, 8)
    assert torch.equal(out["last_hidden_state"], out["hidden_states"][-1])
    # stem (stride 1) tokens are the means of 4 x 4 pixel squares; token 8*r + c is grid row r, column c
    stem = maps[0]
    r, c = 2, 5
    torch.testing.assert_close(out["hidden_states"][0][:, 8 * r + c], stem[:, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4].mean((2, 3)))
    torch.testing.assert_close(out["hidden_states"][2][:, 8 * r + c], maps[2][:, :, 2 * r:2 * r + 2, 2 * c:2 * c + 2].mean((2, 3)))
    # the last state's token mean is the global average pool
    torch.testing.assert_close(out["last_hidden_state"].mean(1), model.pooled(x))


def test_finer_token_grid_repeats_coarse_maps():
    torch.manual_seed(0)
    model = ResNet(32, 3, (8, 16, 32), (1, 1, 1), stem="cifar", token_stride=2).eval()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
        last = model.feature_maps(x)[-1]  # (1, 32, 8, 8), stride 4
    assert model.patch_grid == (16, 16) and out["hidden_states"][-1].shape == (1, 256, 32)
    grid = out["hidden_states"][-1].transpose(1, 2).reshape(1, 32, 16, 16)
    assert torch.equal(grid[:, :, ::2, ::2], last) and torch.equal(grid[:, :, 1::2, 1::2], last)
    torch.testing.assert_close(out["hidden_states"][-1].mean(1), last.mean((2, 3)))


def test_eval_outputs_do_not_depend_on_the_batch():
    torch.manual_seed(0)
    model = ResNet(32, 3, (8, 16), (1, 1), stem="imagenet").eval()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        batched = model(x)["hidden_states"]
        for i in range(3):
            alone = model(x[i:i + 1])["hidden_states"]
            for a, b in zip(alone, batched):
                torch.testing.assert_close(a[0], b[i], atol=1e-6, rtol=1e-5)


def test_zero_init_residual_makes_blocks_start_as_identity_plus_relu():
    model = ResNet(16, 3, (8,), (2,), stem="cifar", zero_init_residual=True).eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        stem, stage = model.feature_maps(x)
    assert torch.equal(stage, stem)  # bn2 scale 0, shift 0: each block returns relu(x) = x (x >= 0)


def test_bad_inputs_and_configs_name_the_problem():
    model = ResNet(32, 3, (8, 16), (1, 1))
    with pytest.raises(ValueError, match=r"expected images \(B, 3, 32, 32\)"):
        model(torch.rand(2, 3, 16, 16))
    with pytest.raises(TypeError, match="float images"):
        model(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="one entry per stage"):
        ResNet(32, 3, (8, 16), (1,))
    with pytest.raises(ValueError, match="stem must be one of"):
        ResNet(32, 3, (8,), (1,), stem="big")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="image_size 30 must be a positive multiple of 8"):
        ResNet(30, 3, (8, 16), (1, 1), stem="imagenet")
    with pytest.raises(ValueError, match="token_stride must be a power of 2"):
        ResNet(32, 3, (8, 16), (1, 1), token_stride=3)
