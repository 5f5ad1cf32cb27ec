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
    if not isinstance(manifest, dict) or "state.json" not in manifest:
        raise CheckpointError("manifest.json lists no state.json")
    for f in sorted(p.name for p in d.iterdir()):
        if f != "manifest.json" and f not in manifest:
            raise CheckpointError(f"{f} is not in the manifest (not written by rlhf-frontier; refusing it)")
    for f, want in manifest.items():
        p = d / f
        if "/" in f or not f.endswith(SAFE_SUFFIXES):
            raise CheckpointError(f"{f}: only safetensors and JSON files are loaded (nothing is unpickled)")
        if not p.is_file():
            raise CheckpointError(f"{f} missing")
        if sha256_file(p) != want:
            raise CheckpointError(f"{f} fails its sha256 checksum")
        if f.endswith(".safetensors"):
            check_safetensors(p)
    try:
        return json.loads((d / "state.json").read_text())
    except ValueError as e:
        raise CheckpointError(f"state.json unreadable: {e}") from None


SAFE_SUFFIXES = (".safetensors", ".json")


def check_safetensors(p: Path) -> None:
    """A file named .safetensors must be one: an 8-byte header length, a JSON header, tensor data
    (a pickle renamed to .safetensors fails here, before anything reads it)."""
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            f.keys()
    except Exception as e:  # noqa: BLE001 -- safetensors raises its own error types
        raise CheckpointError(f"{p.name} is not a valid safetensors file ({e.__class__.__name__})") from None
