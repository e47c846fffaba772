"""Corrupt a saved checkpoint the way a disk or a copy does: one bit inside a tensor's bytes."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import torch


def flip_bit_in_tensor(path: Path, key: str, value: torch.Tensor) -> None:
    """Flip one bit inside the stored bytes of ``value`` (found in the zip's data records)."""
    raw = value.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i.filename) for i in zf.infolist()}
    hits = [name for name, data in members.items() if "/data/" in name and data == raw]
    assert len(hits) == 1, f"tensor {key} not found uniquely in {path}"
    data = bytearray(members[hits[0]])
    data[len(data) // 2] ^= 0x10
    members[hits[0]] = bytes(data)
    # rewrite uncompressed, same member order (torch's own reader only needs a valid zip)
    buf = io.BytesIO()
    with zipfile.ZipFile(path) as zf, zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as out:
        for info in zf.infolist():
            out.writestr(info, members[info.filename])
    path.write_bytes(buf.getvalue())
