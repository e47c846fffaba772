"""Subnets of a LightHuBERT supernet through the hub: hub.load(subnet=), hub export/convert --subnet,
hub info's subnet table, the runner's -u PATH@SUBNET, and the one-line refusals.

The oracle of an exported subnet is the supernet itself running that subnet (the slicing rules
of ``speechssl.nn.supernet``, which tests/nn/test_supernet.py checks against dense layers and
tests/upstream/lighthubert/test_convert.py against the official code): their hidden states must be
equal (measured: max |diff| 0.0 on CPU fp32).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from speechssl import hub
from speechssl.cli import main as cli
from speechssl.log import setup_logging
from speechssl.nn.supernet import Subnet, format_spec, parse_spec
from speechssl.upstream.lighthubert.config import LightHubertConfig, parse_subnet, tiny
from speechssl.upstream.lighthubert.model import LightHubertModel

TOL = 1e-6

# specs of the chunked test supernet below: extremes, uniform, per-layer heads and FFN ratios
SPECS = ["max", "min", "embed=128,heads=2,ffn=3.5,layers=3", "embed=192,heads=1:3:2:3,ffn=3:4:3.5:3",
         "embed=256,heads=4,ffn=3,layers=2"]


def _chunked(layer_norm_first: bool = False) -> LightHubertConfig:
    """A 256-wide, 4-layer supernet (4 heads of 64, FFN 1024 = 4 chunks of 256) whose subnets take
    FFN chunks (E < 256) and drop layers."""
    return dataclasses.replace(
        tiny(), encoder_layers=4, encoder_embed_dim=256, encoder_ffn_embed_dim=1024, encoder_attention_heads=4,
        layer_norm_first=layer_norm_first, space_embed_dims=(128, 192, 256), space_heads=(1, 2, 3, 4),
        space_ffn_ratios=(3.0, 3.5, 4.0), space_layers=(2, 3, 4))


def _supernet(config: LightHubertConfig, seed: int = 0) -> LightHubertModel:
    torch.manual_seed(seed)
    model = LightHubertModel(config).eval()
    with torch.no_grad():  # non-trivial norms, biases and weight-norm magnitudes
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _run(model: LightHubertModel, wavs: list[torch.Tensor], subnet: Subnet | None = None) -> dict:
    with torch.no_grad():
        if subnet is None:
            return model(wavs)
        features, lengths = model.forward_features(*_padded(wavs))
        out = model.encode(features, lengths, subnet)
        return {"hidden_states": out.hidden_states, "lengths": out.lengths}


def _padded(wavs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    from speechssl.nn.lengths import pad_waveforms
    return pad_waveforms(wavs)


def _max_diff(a: dict, b: dict) -> float:
    assert len(a["hidden_states"]) == len(b["hidden_states"])
    assert torch.equal(a["lengths"], b["lengths"])
    return max(float((x - y).abs().max()) for x, y in zip(a["hidden_states"], b["hidden_states"]))


@pytest.fixture(autouse=True)
def _console_on_this_stderr() -> None:
    """The CLI's console log handler on this test's stderr (an earlier test's may be closed)."""
    setup_logging()


@pytest.fixture(scope="module")
def wavs() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(7200, generator=g), torch.randn(4100, generator=g)]


@pytest.mark.parametrize("pre_ln", [False, True])
def test_exported_subnet_equals_the_supernet_running_it(tmp_path: Path, wavs, pre_ln: bool) -> None:
    supernet = _supernet(_chunked(pre_ln))
    src = hub.save(supernet, tmp_path / "supernet")
    worst = 0.0
    for i, spec in enumerate(SPECS):
        subnet = parse_subnet(spec, supernet.config)
        dst = hub.convert(src, tmp_path / f"sub{i}", subnet=spec)
        exported = hub.load(dst)  # plain load: a standalone model
        assert isinstance(exported, LightHubertModel) and exported.config.is_extracted
        assert exported.subnet == subnet and exported.hidden_sizes == [subnet.embed_dim] * (subnet.num_layers + 1)
        diff = _max_diff(_run(exported, wavs), _run(supernet, wavs, subnet))
        worst = max(worst, diff)
        assert diff <= TOL, f"{spec}: exported subnet differs from the supernet by {diff:.2e}"
        # only the subnet's weights: its count is the subnet's, every tensor is at most E wide
        n = sum(p.numel() for p in exported.parameters())
        stats = supernet.subnet_stats(spec)
        assert n == stats["params"] == exported.subnet_stats(None)["params"]
        assert stats["macs"] == exported.num_macs() == exported.subnet_stats("max")["macs"]
        assert exported.state_dict()["encoder.layers.0.fc1.weight"].shape == (subnet.ffn_dims[0], subnet.embed_dim)
        assert len(exported.encoder.layers) == subnet.num_layers
        # hub.load(subnet=) gives the same model as loading the exported directory
        direct = hub.load(src, subnet=spec)
        assert _max_diff(_run(direct, wavs), _run(exported, wavs)) == 0.0
        assert exported.hub_source["subnet"] == format_spec(subnet) == stats["subnet"]
    print(f"max |diff| exported vs supernet over {len(SPECS)} subnets (pre_ln={pre_ln}): {worst:.2e}")


def test_extracted_padding_invariance_and_item_alone(wavs) -> None:
    sub = _supernet(_chunked()).extract_subnet("embed=192,heads=1:3:2:3,ffn=3:4:3.5:3").eval()
    batch = _run(sub, wavs)
    alone = _run(sub, wavs[1:])
    n = int(batch["lengths"][1])
    for a, b in zip(batch["hidden_states"], alone["hidden_states"]):
        torch.testing.assert_close(a[1, :n], b[0, :n], atol=1e-5, rtol=1e-5)


def test_spec_grammar_round_trips_and_fills_from_the_largest() -> None:
    space = _chunked().search_space
    s = parse_spec("embed=128,heads=1:2:3,ffn=3:3.5:4", space)
    assert s == Subnet(128, (1, 2, 3), (384, 448, 512))
    assert parse_spec(format_spec(s), space) == s
    assert parse_spec("layers=2", space) == Subnet(256, (4, 4), (1024, 1024))  # the rest at the largest
    assert format_spec(Subnet.uniform(256, 4, 3.0, 2)) == "embed=256,heads=4,ffn=3,layers=2"
    config = _chunked()
    assert parse_subnet("largest", config) == parse_subnet("max", config) == space.max()
    assert parse_subnet("smallest", config) == Subnet(128, (1, 1), (384, 384))
    assert parse_subnet('{"embed_dim": 128, "heads": [1, 2], "ffn_dims": [384, 512]}', config).num_layers == 2


@pytest.mark.parametrize("spec, message", [
    ("embed=100", "subnet 'embed=100': embed=100 is not in the search space; embed may be 128, 192, 256"),
    ("heads=5", "heads=5 is not in the search space; heads may be 1, 2, 3, 4"),
    ("ffn=2.5", "ffn=2.5 is not in the search space; ffn may be 3, 3.5, 4"),
    ("layers=7", "layers=7 is not in the search space; layers may be 2, 3, 4"),
    ("embed=128,depth=3", "unknown field 'depth'; fields are embed, heads, ffn, layers"),
    ("heads=1:2,layers=3", "heads has 2 values for 3 layers"),
    ("embed=abc", "embed='abc' is not an integer"),
    ("small", "embed=384 is not in the search space; embed may be 128, 192, 256"),
    ("huge", "expected max, largest, min, smallest, small, base, field=value pairs"),
    ('{"embed_dim": 128, "heads": [5, 1], "ffn_dims": [384, 384]}', "heads=5 is not in the search space"),
])
def test_bad_specs_are_one_line_errors_naming_the_field(tmp_path: Path, spec: str, message: str,
                                                        capsys: pytest.CaptureFixture) -> None:
    src = hub.save(_supernet(_chunked()), tmp_path / "supernet")
    capsys.readouterr()
    with pytest.raises(hub.HubError) as err:
        hub.load(src, subnet=spec)
    assert message in str(err.value) and "\n" not in str(err.value) and str(src) in str(err.value)
    assert cli(["hub", "convert", str(src), str(tmp_path / "out"), "--subnet", spec]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_an_extracted_subnet_runs_only_itself(tmp_path: Path) -> None:
    dst = hub.convert(hub.save(_supernet(_chunked()), tmp_path / "s"), tmp_path / "e", subnet="min")
    assert hub.load(dst, subnet="max").subnet == hub.load(dst).subnet == Subnet(128, (1, 1), (384, 384))
    with pytest.raises(hub.HubError, match="is the extracted subnet embed=128,heads=1,ffn=3,layers=2 and runs only"):
        hub.load(dst, subnet="embed=128,heads=2,ffn=3,layers=2")


def test_other_methods_refuse_a_subnet_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from speechssl.registry import get_method

    method = get_method("hubert")
    src = hub.save(method.build(method.preset("tiny")).eval(), tmp_path / "hubert")
    with pytest.raises(hub.HubError, match=r"subnet 'min' given, but a hubert model has no subnets; only "
                                           r"weight-sharing supernets take one \(.*lighthubert.*\)"):
        hub.load(src, subnet="min")
    assert cli(["hub", "info", str(src), "--subnet", "min"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no subnets" in err[0]
    # --time on a model without subnets: one row for the model itself
    info = hub.info(src, time_forward=True, repeats=1, num_samples=4000)
    assert info.subnets[0]["name"] == "model" and info.subnets[0]["forward_ms"] > 0
    assert info.subnets[0]["params"] == info.num_parameters


def test_cli_info_prints_the_subnet_table_and_export_writes_the_zoo(tmp_path: Path, isolated_home: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    supernet = _supernet(_chunked())
    src = hub.save(supernet, tmp_path / "supernet")
    assert cli(["hub", "info", str(src), "--subnet", "min", "--subnet", "embed=192,heads=3,ffn=4,layers=4",
                "--time", "--repeats", "1", "--seconds", "0.5", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["subnets"]
    assert [r["name"] for r in rows] == ["min", "embed=192,heads=3,ffn=4,layers=4", "supernet"]
    assert rows[0]["params"] == supernet.subnet_stats("min")["params"]
    assert rows[0]["macs"] == supernet.num_macs(8000, parse_subnet("min", supernet.config))
    assert rows[0]["params"] < rows[1]["params"] < rows[2]["params"] == sum(p.numel() for p in supernet.parameters())
    assert rows[0]["forward_ms"] > 0 and rows[1]["forward_ms"] > 0 and rows[2]["forward_ms"] is None
    assert cli(["hub", "info", str(src)]) == 0
    out = capsys.readouterr().out
    assert "subnets:" in out and "active" in out and "embed=256,heads=4,ffn=4,layers=4" in out and "supernet" in out
    assert cli(["hub", "export", str(src), "lh-min", "--subnet", "min"]) == 0
    dst = Path(capsys.readouterr().out.strip())
    assert dst == isolated_home / "models" / "lh-min"
    assert hub.load("lh-min").subnet == parse_subnet("min", supernet.config)
    assert cli(["hub", "info", "lh-min"]) == 0
    assert "subnet of:" in capsys.readouterr().out


def test_runner_takes_path_at_subnet(tmp_path: Path, wavs) -> None:
    from speechssl.downstream.upstreams import load_upstream

    supernet = _supernet(_chunked())
    src = hub.save(supernet, tmp_path / "supernet")
    small = load_upstream(f"{src}@min")
    assert small.name == f"{src}@min" and small.hidden_sizes == [128] * 3
    big = load_upstream(f"{src}@embed=256,heads=4,ffn=4,layers=3")
    assert big.hidden_sizes == [256] * 4 and big.hash != small.hash
    assert load_upstream("named", ckpt=f"{src}@min").hash == small.hash
    assert _max_diff(_run(small.model, wavs), _run(supernet, wavs, parse_subnet("min", supernet.config))) <= TOL
    with pytest.raises(ValueError, match="heads=9 is not in the search space; heads may be 1, 2, 3, 4"):
        load_upstream(f"{src}@heads=9")


def test_subnet_parameter_count_equals_a_hubert_of_the_same_geometry() -> None:
    """Oracle: HuBERT tiny (4 x 192, FFN 768, the same conv stack and position conv) built by the
    hubert method; a LightHuBERT subnet of that geometry counts the same parameters."""
    from speechssl.registry import get_method

    method = get_method("hubert")
    hubert = method.build(method.preset("tiny"))
    config = dataclasses.replace(tiny(), encoder_layers=4, encoder_embed_dim=192, encoder_ffn_embed_dim=768,
                                 encoder_attention_heads=3, space_embed_dims=(192,), space_heads=(3,),
                                 space_layers=(4,))
    assert LightHubertModel(config).subnet_stats("max")["params"] == sum(p.numel() for p in hubert.parameters())
