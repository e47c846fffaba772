"""Find pretraining methods and downstream tasks by name.

Methods and tasks are declared as entry points in ``setup.py`` (groups ``speechssl.upstream``
and ``speechssl.downstream``), each pointing at a :class:`Method` or :class:`DownstreamTask`
object, and are loaded only when asked for. A third-party package adds a method by declaring
its own entry point; a script can also :func:`register` one at run time. Nothing scans
directories at import.

The upstream contract every method's model follows (DESIGN.md)::

    out = model(inputs)         # what inputs are is the method's input_kind (INPUT_KINDS)
    out["hidden_states"]        # list of (B, T, D) tensors, one per layer (input layer first)
    out["last_hidden_state"]    # (B, T, D), the same as hidden_states[-1]
    out["lengths"]              # (B,) int64: valid frames (tokens, patches) per item
    model.downsample_rate       # audio only: samples per output frame (int)
    model.hidden_sizes          # list[int], D of each hidden state

A method declares its ``modality`` and ``input_kind``; the hub, ``speechssl pretrain`` and the
downstream runner check them (:meth:`Method.require_modality`) and refuse a method of the wrong
kind with one clear line instead of failing deep inside a forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, TypedDict

import torch

__all__ = [
    "UpstreamOutput", "Method", "DownstreamTask", "register", "get_method", "list_methods",
    "get_downstream", "list_downstreams", "RegistryError", "ModalityError", "MODALITIES", "INPUT_KINDS",
    "methods_with_converter",
]

#: What a method learns representations of.
MODALITIES = ("audio", "image", "video", "points", "text", "multimodal")

#: What a method's upstream ``forward`` takes, by ``Method.input_kind``.
INPUT_KINDS: dict[str, str] = {
    "waveform": "a list of B 1-D float tensors (S_i,), 16 kHz samples",
    "spectrogram": "a list of B float tensors (T_i, F): frames x mel bins",
    "image": "a float tensor (B, C, H, W)",
    "video": "a float tensor (B, C, T, H, W)",
    "points": "a list of B float tensors (N_i, 3)",
    "text": "a list of B 1-D int64 token-id tensors (L_i,)",
    "speech+text": "a dict with 'wavs' (waveform) and/or 'tokens' (text)",
}

#: The modality each input kind belongs to.
_KIND_MODALITY = {"waveform": "audio", "spectrogram": "audio", "image": "image", "video": "video",
                  "points": "points", "text": "text", "speech+text": "multimodal"}

UPSTREAM_GROUP = "speechssl.upstream"
DOWNSTREAM_GROUP = "speechssl.downstream"


class RegistryError(KeyError):
    """No method or task of that name is known."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class ModalityError(ValueError):
    """A method of another modality than the command or task works with."""


class UpstreamOutput(TypedDict):
    """What every upstream's ``forward`` returns (see module docstring)."""

    hidden_states: list[torch.Tensor]
    last_hidden_state: torch.Tensor
    lengths: torch.Tensor


@dataclass(frozen=True)
class Method:
    """A pretraining method: its config, model and pretraining task.

    Attributes:
        name: registry name (``"hubert"``).
        config_cls: the model config dataclass; ``config_cls()`` need not be valid, presets are.
        model_cls: ``nn.Module`` class with ``from_config(cfg)``, following the upstream contract.
        presets: preset name → function returning a filled config.
        task_cls: the pretraining Task class (``speechssl.train.Task``), or None.
        task_config_cls: the dataclass that configures ``task_cls``, or None.
        description: one line for ``speechssl hub list`` and ``--help``.
        converters: foreign checkpoint format → this method's converter for it. ``"hf"``: a
            :class:`speechssl.convert.trunk_hf.TrunkHFConverter` (or any object with its
            ``model_types``/``hf_to_speechssl``/``speechssl_to_hf``); ``"fairseq"``: a
            :class:`speechssl.convert.fairseq.FairseqConverter` (``models`` + ``read``). The hub
            finds the method of a foreign checkpoint by asking every registered method's
            converter, so the core holds no list of methods or formats.
        modality: one of :data:`MODALITIES`.
        input_kind: what the upstream's ``forward`` takes, one of :data:`INPUT_KINDS`.
        example: ``example(directory) -> task config``: writes a tiny training set under
            ``directory`` and returns the ``task_config_cls`` instance that pretrains
            :attr:`smallest_preset` on it for a few updates (the contract tests run it). None
            only for methods without a pretraining task.
        smallest: the preset that trains in seconds on a CPU (None: ``"tiny"`` if present, else
            the first preset).
    """

    name: str
    config_cls: type
    model_cls: type
    presets: dict[str, Callable[[], Any]] = field(default_factory=dict)
    task_cls: type | None = None
    task_config_cls: type | None = None
    description: str = ""
    converters: dict[str, Any] = field(default_factory=dict)
    modality: str = "audio"
    input_kind: str = "waveform"
    example: Callable[[Path], Any] | None = None
    smallest: str | None = None

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"method {self.name!r}: modality {self.modality!r} is not one of "
                             f"{', '.join(MODALITIES)}")
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"method {self.name!r}: input_kind {self.input_kind!r} is not one of "
                             f"{', '.join(INPUT_KINDS)}")
        if _KIND_MODALITY[self.input_kind] != self.modality:
            raise ValueError(f"method {self.name!r}: input_kind {self.input_kind!r} is "
                             f"{_KIND_MODALITY[self.input_kind]} input, not {self.modality}")
        if (self.task_cls is None) != (self.task_config_cls is None):
            raise ValueError(f"method {self.name!r}: give both task_cls and task_config_cls, or neither")
        if self.smallest is not None and self.smallest not in self.presets:
            raise ValueError(f"method {self.name!r}: smallest={self.smallest!r} is not one of its presets "
                             f"({', '.join(self.presets)})")

    @property
    def smallest_preset(self) -> str:
        """:attr:`smallest`, else ``"tiny"`` when the method has it, else its first preset."""
        if not self.presets:
            raise RegistryError(f"method {self.name!r} has no presets")
        if self.smallest is not None:
            return self.smallest
        return "tiny" if "tiny" in self.presets else next(iter(self.presets))

    def require_modality(self, modality: str | tuple[str, ...], what: str) -> None:
        """Raise :class:`ModalityError` unless this method's modality is (one of) ``modality``.

        ``what`` names who is asking, as a plural subject (``"the downstream runner's audio tasks"``).
        """
        wanted = (modality,) if isinstance(modality, str) else tuple(modality)
        if self.modality not in wanted:
            article = "an" if self.modality[0] in "aeiou" else "a"
            raise ModalityError(f"{what} take {' or '.join(wanted)} methods; {self.name!r} is {article} "
                                f"{self.modality} method (input: {INPUT_KINDS[self.input_kind]})")

    def converter(self, fmt: str) -> Any:
        """The converter of foreign format ``fmt`` (``"hf"``)."""
        try:
            return self.converters[fmt]
        except KeyError:
            raise RegistryError(f"method {self.name!r} has no {fmt!r} converter; it has: "
                                f"{', '.join(self.converters) or '(none)'}") from None

    def preset(self, name: str) -> Any:
        """The config of preset ``name``."""
        try:
            return self.presets[name]()
        except KeyError:
            raise RegistryError(
                f"method {self.name!r} has no preset {name!r}; presets: {', '.join(self.presets)}") from None

    def build(self, config: Any) -> torch.nn.Module:
        """A freshly initialised model for ``config``."""
        return self.model_cls.from_config(config)


@dataclass(frozen=True)
class DownstreamTask:
    """A SUPERB-style downstream task.

    Attributes:
        name: registry name (``"ks"``).
        task_cls: the downstream Task class the runner trains (``speechssl.train.Task``).
        config_cls: its config dataclass.
        metric: the headline metric's name (``"accuracy"``, ``"wer"``, ``"eer"``...).
        higher_is_better: direction of ``metric``.
        description: one line shown in reports.
        modality: the modality of the upstreams it evaluates (one of :data:`MODALITIES`); the
            runner refuses an upstream of another modality.
    """

    name: str
    task_cls: type
    config_cls: type
    metric: str
    higher_is_better: bool
    description: str = ""
    modality: str = "audio"

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"downstream task {self.name!r}: modality {self.modality!r} is not one of "
                             f"{', '.join(MODALITIES)}")


@dataclass
class _Registry:
    group: str
    kind: str
    items: dict[str, Any] = field(default_factory=dict)

    def _entry_points(self) -> dict[str, metadata.EntryPoint]:
        return {ep.name: ep for ep in metadata.entry_points(group=self.group)}

    def get(self, name: str) -> Any:
        if name in self.items:
            return self.items[name]
        eps = self._entry_points()
        if name not in eps:
            known = sorted(set(eps) | set(self.items))
            raise RegistryError(f"unknown {self.kind} {name!r}; known: {', '.join(known) or '(none)'}")
        obj = eps[name].load()
        self.items[name] = obj
        return obj

    def names(self) -> list[str]:
        return sorted(set(self._entry_points()) | set(self.items))


_METHODS = _Registry(UPSTREAM_GROUP, "upstream method")
_DOWNSTREAMS = _Registry(DOWNSTREAM_GROUP, "downstream task")


def register(spec: Method | DownstreamTask) -> None:
    """Register a method or task at run time (entry points are the usual way)."""
    if isinstance(spec, Method):
        _METHODS.items[spec.name] = spec
    elif isinstance(spec, DownstreamTask):
        _DOWNSTREAMS.items[spec.name] = spec
    else:
        raise TypeError(f"expected Method or DownstreamTask, got {type(spec).__name__}")


def get_method(name: str) -> Method:
    """The pretraining method called ``name``."""
    return _METHODS.get(name)


def list_methods() -> list[str]:
    """Names of all known methods (without importing them)."""
    return _METHODS.names()


def methods_with_converter(fmt: str) -> list[Method]:
    """Every known method with a converter for foreign format ``fmt``, by name (imports them all)."""
    return [m for m in (get_method(n) for n in list_methods()) if fmt in m.converters]


def get_downstream(name: str) -> DownstreamTask:
    """The downstream task called ``name``."""
    return _DOWNSTREAMS.get(name)


def list_downstreams() -> list[str]:
    """Names of all known downstream tasks (without importing them)."""
    return _DOWNSTREAMS.names()

