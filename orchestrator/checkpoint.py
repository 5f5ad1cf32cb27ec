"""Seed streams and checkpoint integrity, shared by the pipeline stages and the RL loop.

``stream`` derives an independent seed per named random stream from the config seed; the
checksum helpers write and verify the sha256 manifest every RL checkpoint carries.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def stream(seed: int, name: str) -> int:
    """An independent seed per named random stream, derived from the config seed."""
    return int(hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()[:8], 16)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class CheckpointError(RuntimeError):
    pass


def verify_checkpoint(d: Path) -> dict:
    """Check every file against ``manifest.json``; return ``state.json``. Raises CheckpointError."""
    try:
        manifest = json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"manifest.json unreadable: {e.__class__.__name__}") from None
    for f, want in manifest.items():
        p = d / f
        if not p.is_file():
            raise CheckpointError(f"{f} missing")
        if sha256_file(p) != want:
            raise CheckpointError(f"{f} fails its sha256 checksum")
    return json.loads((d / "state.json").read_text())
