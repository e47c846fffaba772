"""Frozen modules: submodules of the training model that the optimizer never sees.

A Task names them with :meth:`speechssl.train.task.Task.frozen_modules`, as
``{submodule name: reference}``:

- a **reference** (a string such as ``"hub:hubert-base"`` or a checkpoint path) marks a module
  that never changes, e.g. a pretrained teacher. It is stored in training checkpoints by that
  reference and the sha256 of its tensors, not by its weights; on resume the Task rebuilds it
  from the reference in ``build_model`` and the Trainer checks the hash.
- **None** marks a module that is not optimised but changes, e.g. an EMA teacher updated in
  ``Task.on_update``. Its weights are saved in the checkpoint like the rest of the model.

Either way its parameters get ``requires_grad=False``, it is in no optimizer group, DDP
neither synchronises its gradients nor broadcasts its parameters and buffers, and it stays in
eval mode while the rest of the model trains (no dropout, frozen norm statistics).
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping

import torch
from torch import nn

__all__ = ["FrozenModules", "tensor_sha256"]


def tensor_sha256(module: nn.Module) -> str:
    """sha256 (hex) over ``module.state_dict()``: each key, dtype, shape and raw bytes, keys sorted."""
    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        if not isinstance(value, torch.Tensor):
            continue
        t = value.detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class FrozenModules:
    """The frozen submodules of ``model``; freezes them on construction.

    Args:
        model: the Task's model (unwrapped).
        spec: ``Task.frozen_modules(model)``: submodule name -> reference string, or None.
        owner: who named them (the Task class name), for error messages.

    Raises:
        ValueError: a name that is not a submodule, the empty name (the whole model), nested
            names, or a reference that is not a non-empty string.
    """

    def __init__(self, model: nn.Module, spec: Mapping[str, str | None], owner: str) -> None:
        self.modules: dict[str, nn.Module] = {}
        self.references: dict[str, str] = {}
        for name, ref in dict(spec).items():
            if not name:
                raise ValueError(f"{owner}.frozen_modules: the empty name would freeze the whole model")
            try:
                sub = model.get_submodule(name)
            except AttributeError:
                raise ValueError(f"{owner}.frozen_modules: {name!r} is not a submodule of the model "
                                 f"(top-level modules: {', '.join(n for n, _ in model.named_children())})") from None
            if ref is not None and (not isinstance(ref, str) or not ref):
                raise ValueError(f"{owner}.frozen_modules[{name!r}] must be a reference string or None, got {ref!r}")
            self.modules[name] = sub
            if ref is not None:
                self.references[name] = ref
        names = sorted(self.modules)
        for a, b in zip(names, names[1:]):
            if b.startswith(a + "."):
                raise ValueError(f"{owner}.frozen_modules: {b!r} lies inside {a!r}; name only the outer module")
        for sub in self.modules.values():
            sub.requires_grad_(False)
        self.eval()
        self.hashes = {name: tensor_sha256(self.modules[name]) for name in self.references}

    def __bool__(self) -> bool:
        return bool(self.modules)

    def eval(self) -> None:
        """Put every frozen module in eval mode (call after ``model.train()``)."""
        for sub in self.modules.values():
            sub.eval()

    def ddp_ignore(self) -> list[str]:
        """Fully qualified parameter and buffer names for DDP to neither reduce nor broadcast."""
        out = []
        for name, sub in self.modules.items():
            out += [f"{name}.{n}" for n, _ in sub.named_parameters()]
            out += [f"{name}.{n}" for n, _ in sub.named_buffers()]
        return out

    def _by_reference(self, key: str) -> str | None:
        for name in self.references:
            if key.startswith(name + "."):
                return name
        return None

    def strip(self, state: dict[str, Any]) -> dict[str, Any]:
        """``model.state_dict()`` without the tensors of modules stored by reference."""
        if not self.references:
            return state
        return {k: v for k, v in state.items() if self._by_reference(k) is None}

    def record(self) -> dict[str, dict[str, str]]:
        """The checkpoint's ``frozen`` entry: ``{name: {"reference": ..., "sha256": ...}}``."""
        return {name: {"reference": ref, "sha256": self.hashes[name]} for name, ref in self.references.items()}

    def restore(self, state: dict[str, Any], saved: Mapping[str, Any], where: str) -> dict[str, Any]:
        """``state`` (a checkpoint's model state) completed with the rebuilt modules stored by reference.

        Args:
            state: the checkpoint's ``model`` entry.
            saved: the checkpoint's ``frozen`` entry (``{}`` for checkpoints without one).
            where: the checkpoint path, for messages.

        Raises:
            ValueError: (one line) a module rebuilt from its reference whose sha256 differs from the
                recorded one, or a module the checkpoint stores by reference that the task no longer
                freezes by reference.
        """
        for name, rec in saved.items():
            if name not in self.references:
                raise ValueError(f"{where}: the checkpoint stores module {name!r} by reference "
                                 f"({rec.get('reference')!r}) but the task no longer freezes it by reference")
            if rec.get("sha256") != self.hashes[name]:
                raise ValueError(
                    f"{where}: frozen module {name!r} rebuilt from {self.references[name]!r} has sha256 "
                    f"{self.hashes[name][:16]}..., the checkpoint recorded {str(rec.get('sha256'))[:16]}... "
                    f"(from {rec.get('reference')!r}): the reference changed since training started; "
                    "restore it or start a new exp dir")
        out = dict(state)
        for name in self.references:
            prefix = f"{name}."
            # an older checkpoint that saved the module's weights loads them as they are
            if name in saved or not any(k.startswith(prefix) for k in state):
                for k, v in self.modules[name].state_dict().items():
                    out.setdefault(prefix + k, v)
        return out
