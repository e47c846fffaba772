"""Resolve an upstream spec (``-u``) into a ready, frozen model plus the identity a result records.

Specs, in the order they are tried:

=============================  ===========================================================
``fbank``, ``mfcc``,           surface-feature baselines (:mod:`.baselines`), audio tasks
``spectrogram``
``pixels[@<size>x<channels>]`` raw pixels (:mod:`.image_features`), image tasks; default 32x3
``random:<method>[@preset]``   a randomly initialised model of a registered method
a path                         a hub model directory or a training checkpoint (``hub.load``)
a name                         a model in the local zoo (``hub.load``)
``<path or name>@<subnet>``    one subnet of a weight-sharing supernet (LightHuBERT), as
                               ``hub.load(path, subnet=...)``: ``@max``, ``@min``, ``@small``,
                               ``@embed=256,heads=4,ffn=3,layers=10`` (an existing path that
                               holds ``@`` is read as a path)
=============================  ===========================================================

``-k/--upstream_ckpt PATH`` loads PATH through the hub instead (``PATH@<subnet>`` too); ``-u``
is then the name the results carry, and when it is a registered method the loaded model must
be of that method. A subnet's standalone model has its own config and weights, so its hash (and
feature cache) is its own.

The runner never imports a specific upstream: everything goes through :mod:`speechssl.hub`
and :mod:`speechssl.registry`.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from speechssl.downstream.baselines import BASELINE_FEATURES, FeatureConfig, FeatureUpstream, random_upstream
from speechssl.downstream.image_features import PixelConfig, PixelUpstream
from speechssl.fingerprint import model_sha256

__all__ = ["LoadedUpstream", "load_upstream", "upstream_hash"]

_log = logging.getLogger(__name__)

_RANDOM = re.compile(r"^random:([A-Za-z0-9_\-]+)(?:@([A-Za-z0-9_\-]+))?$")
_PIXELS = re.compile(r"^pixels(?:@(\d+)x(\d+))?$")


@dataclass
class LoadedUpstream:
    """A resolved upstream.

    Attributes:
        model: the module, in eval mode, following the upstream contract.
        name: the spec as the user gave it (``"fbank"``, ``"random:hubert@tiny"``, a path...).
        hash: hex sha256 of the method, config and weights: two upstreams with the same hash
            produce the same features (it keys the feature cache and goes into results).
        method: the model's registry method (``"hubert"``) or baseline kind (``"fbank"``).
        modality: what it encodes (``"audio"``, ``"image"``).
    """

    model: nn.Module
    name: str
    hash: str
    method: str
    modality: str = "audio"

    @property
    def num_layers(self) -> int:
        return len(self.model.hidden_sizes)

    @property
    def hidden_sizes(self) -> list[int]:
        return list(self.model.hidden_sizes)

    @property
    def downsample_rate(self) -> int | None:
        """Samples per frame of an audio upstream; None for other modalities."""
        return int(self.model.downsample_rate) if self.modality == "audio" else None

    def describe(self) -> dict[str, object]:
        """JSON-safe identity for ``result.json``."""
        out: dict[str, object] = {"name": self.name, "method": self.method, "hash": self.hash,
                                  "hidden_sizes": self.hidden_sizes}
        if self.modality == "audio":
            out["downsample_rate"] = self.downsample_rate
        else:
            out["modality"] = self.modality
        return out


def upstream_hash(model: nn.Module) -> str:
    """sha256 over the model's method name, its config and every state-dict tensor (by name):
    :func:`speechssl.fingerprint.model_sha256`, the one model fingerprint."""
    return model_sha256(model)


def load_upstream(spec: str, *, ckpt: str | Path | None = None, seed: int = 0,
                  device: torch.device | str = "cpu", modality: str = "audio") -> LoadedUpstream:
    """Resolve ``spec`` (see the module docstring) into a frozen upstream on ``device``.

    Args:
        spec: the ``-u`` value.
        ckpt: the ``-k`` value (a model directory or training checkpoint), if any.
        seed: initialisation seed of ``random:`` upstreams.
        device: where the model runs.
        modality: what the task evaluates (its ``DownstreamTask.modality``); an upstream of
            another modality is refused in one line.

    Raises:
        ValueError / FileNotFoundError / KeyError: the spec names nothing loadable; the
            message lists what was tried.
    """
    from speechssl.registry import list_methods

    if not spec:
        baselines = "fbank|mfcc|spectrogram" if modality == "audio" else "pixels[@SIZExC]"
        raise ValueError(f"no upstream given: pass -u {baselines}|random:<method>[@preset]|PATH|NAME"
                         "[@SUBNET]")
    if ckpt is not None:
        model = _hub_load(ckpt, device)
        method = getattr(model, "method", None)
        if spec in list_methods() and method not in (None, spec):
            raise ValueError(f"-u {spec} but the checkpoint {ckpt} holds a {method!r} model; "
                             f"pass -u {method} (or a free-form name)")
        name = spec
    elif spec in BASELINE_FEATURES:
        if modality != "audio":
            raise ValueError(f"-u {spec} is an audio baseline; {modality} tasks take -u pixels[@SIZExC], "
                             "random:<method>[@preset], a path or a zoo name")
        model = FeatureUpstream(FeatureConfig(kind=spec, delta_order=0 if spec == "spectrogram" else 2))
        name = spec
    elif _PIXELS.match(spec):
        if modality != "image":
            raise ValueError(f"-u {spec} is the image baseline; {modality} tasks take "
                             f"{'fbank, mfcc, spectrogram' if modality == 'audio' else 'a model'}")
        m = _PIXELS.match(spec)
        size, channels = (int(m.group(1)), int(m.group(2))) if m.group(1) else (32, 3)
        model = PixelUpstream(PixelConfig(image_size=size, channels=channels))
        name = spec
    elif spec.startswith("random:"):
        m = _RANDOM.match(spec)
        if not m:
            raise ValueError(f"bad random upstream {spec!r}: expected random:<method>[@preset], "
                             "e.g. random:hubert@tiny")
        model = random_upstream(m.group(1), m.group(2), seed=seed, modality=modality)
        name = spec
    else:
        model = _hub_load(spec, device)
        name = spec
    _check_modality(model, name, modality)
    model = _freeze(model.to(device))
    _check_contract(model, name, modality)
    digest = upstream_hash(model)
    method = str(getattr(model, "method", type(model).__name__))
    rate = f", {model.downsample_rate} samples/frame" if modality == "audio" else ""
    _log.info("upstream %s: method %s, %d hidden states of sizes %s%s, hash %s",
              name, method, len(model.hidden_sizes), sorted(set(model.hidden_sizes)), rate, digest[:12])
    return LoadedUpstream(model=model, name=name, hash=digest, method=method, modality=modality)


def _hub_load(name_or_path: str | Path, device: torch.device | str) -> nn.Module:
    try:
        from speechssl import hub
    except ImportError as exc:  # pragma: no cover - the hub ships with speechssl
        raise RuntimeError(f"cannot import speechssl.hub to load {name_or_path!r}: {exc}") from exc
    src, subnet = hub.split_subnet(str(name_or_path))
    try:
        return hub.load(src, device=device, subnet=subnet)
    except (FileNotFoundError, KeyError) as exc:
        raise type(exc)(
            f"upstream {str(name_or_path)!r} is not a baseline ({', '.join(BASELINE_FEATURES)}), "
            f"not random:<method>[@preset], and the hub could not load it: {exc}") from None


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _check_modality(model: nn.Module, name: str, modality: str) -> None:
    """A task evaluates upstreams of its modality; a registered method of another one is refused."""
    from speechssl.registry import get_method, list_methods

    method = getattr(model, "method", None)
    if isinstance(method, str) and method in list_methods():
        get_method(method).require_modality(modality, f"the downstream runner's {modality} tasks (-u {name})")


def _check_contract(model: nn.Module, name: str, modality: str) -> None:
    needed = ("hidden_sizes", "downsample_rate") if modality == "audio" else ("hidden_sizes",)
    for attr in needed:
        if not hasattr(model, attr):
            raise ValueError(f"upstream {name!r} ({type(model).__name__}) lacks attribute {attr!r} "
                             "required by the upstream contract (speechssl.registry)")
    if len(model.hidden_sizes) == 0:
        raise ValueError(f"upstream {name!r} reports no hidden states (hidden_sizes is empty)")
