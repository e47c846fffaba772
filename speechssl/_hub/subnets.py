"""Subnets of weight-sharing supernets (LightHuBERT) through the hub: select, describe, time.

A model is a supernet when it has ``extract_subnet(spec) -> nn.Module`` (the standalone model of
one subnet, holding only its weights) and ``subnet_stats(spec | None, num_samples) -> {"subnet",
"params", "macs"}`` (``None``: the whole supernet). The core never names a method: it asks the
model, and refuses a ``subnet=`` for a model without them in one line that lists the registered
methods whose models have them.

Spec syntax is the method's (LightHuBERT: ``max``, ``min``, ``small``, ``base``,
``embed=E,heads=H,ffn=R,layers=L``; see :mod:`speechssl.upstream.lighthubert.config`).
``split_subnet`` cuts ``SRC@SPEC`` (what the downstream runner's ``-u``/``-k`` take) in two.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speechssl._hub.modeldir import HubError

__all__ = ["is_supernet", "select_subnet", "subnet_rows", "split_subnet", "supernet_methods", "forward_ms"]


def is_supernet(model: nn.Module) -> bool:
    """Whether ``model`` has subnets (``extract_subnet`` and ``subnet_stats``)."""
    return callable(getattr(model, "extract_subnet", None)) and callable(getattr(model, "subnet_stats", None))


def supernet_methods() -> list[str]:
    """Registered methods whose models are supernets (for the refusal message)."""
    from speechssl.registry import get_method, list_methods

    out = []
    for name in list_methods():
        try:
            cls = get_method(name).model_cls
        except Exception:  # noqa: BLE001 - a broken plug-in must not hide the refusal
            continue
        if callable(getattr(cls, "extract_subnet", None)):
            out.append(name)
    return out


def _refuse(model: nn.Module, spec: str, where: str) -> HubError:
    method = getattr(model, "method", type(model).__name__)
    others = ", ".join(supernet_methods()) or "none registered"
    return HubError(f"{where}: subnet {spec!r} given, but a {method} model has no subnets; only weight-sharing "
                    f"supernets take one ({others})")


def select_subnet(model: nn.Module, spec: str, where: str) -> nn.Module:
    """The standalone model of subnet ``spec`` of ``model`` (eval mode, ``model``'s device).

    Raises:
        HubError: ``model`` is not a supernet, or the spec is bad (one line naming ``where``, the
            field and the values the search space allows).
    """
    if not is_supernet(model):
        raise _refuse(model, spec, where)
    try:
        sub = model.extract_subnet(spec)
    except ValueError as exc:
        raise HubError(f"{where}: {exc}") from None
    source = dict(getattr(sub, "hub_source", None) or {})
    source.setdefault("supernet", where)
    sub.hub_source = source
    return sub.eval()


@torch.no_grad()
def forward_ms(model: nn.Module, num_samples: int, repeats: int) -> float:
    """Median wall time (ms) of one forward of one ``num_samples`` waveform, after one warm-up."""
    gen = torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    wav = [torch.randn(num_samples, generator=gen).to(device)]
    model(wav)
    times = []
    for _ in range(max(1, repeats)):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        model(wav)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def subnet_rows(model: nn.Module, specs: list[str] | None, where: str, *, num_samples: int = 16000,
                time_forward: bool = False, repeats: int = 5) -> list[dict[str, Any]]:
    """The subnet table of a supernet: one row per spec, then the whole supernet.

    Args:
        specs: subnet specs; None or empty: the model's active subnet only.
        num_samples: the input of the MAC count and of the timed forward (default 1 s at 16 kHz).
        time_forward: also time each subnet's standalone model (median of ``repeats`` forwards of
            one waveform, torch's current threads, the model's device), in ``forward_ms``.

    Returns:
        ``[{"name", "subnet", "params", "macs", "forward_ms"}, ...]``; the last row is
        ``{"name": "supernet", ...}`` (every parameter; MACs at full width; not timed).

    Raises:
        HubError: not a supernet, or a bad spec.
    """
    if not is_supernet(model):
        raise _refuse(model, ",".join(specs or []) or "(table)", where)
    rows = []
    for spec in specs or [None]:
        try:
            # no spec: the subnet the model runs now (its ``subnet`` attribute)
            stats = model.subnet_stats(spec if spec is not None else getattr(model, "subnet", None) or "max",
                                       num_samples)
        except ValueError as exc:
            raise HubError(f"{where}: {exc}") from None
        row: dict[str, Any] = {"name": spec or "active", **stats, "forward_ms": None}
        if time_forward:
            row["forward_ms"] = round(forward_ms(select_subnet(model, stats["subnet"], where), num_samples,
                                                  repeats), 3)
        rows.append(row)
    rows.append({"name": "supernet", **model.subnet_stats(None, num_samples), "forward_ms": None})
    return rows


def split_subnet(text: str) -> tuple[str, str | None]:
    """``SRC@SPEC`` → ``(SRC, SPEC)``; ``(text, None)`` when ``text`` is an existing path or has no ``@``.

    The last ``@`` splits, so a path holding ``@`` still works when it exists as written.
    """
    if "@" not in text or Path(text).expanduser().exists():
        return text, None
    src, _, spec = text.rpartition("@")
    if not src or not spec.strip():
        raise ValueError(f"{text!r}: expected SRC@SUBNET (e.g. exp/lighthubert/supernet@min), got an empty "
                         f"{'source' if not src else 'subnet'}")
    return src, spec.strip()
