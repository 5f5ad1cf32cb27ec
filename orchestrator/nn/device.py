"""Where and in what precision a role computes (torch only: an oracle-only ensemble imports this
without ``transformers``)."""

from __future__ import annotations

import torch


def role_device(device: str = "cpu") -> torch.device:
    """The device a role computes on: ``cuda`` when Ray gave the actor a GPU (``num_gpus > 0``:
    ``ActorGroup`` passes ``device="cuda"``) and CUDA is there, else the CPU."""
    return torch.device("cuda") if device == "cuda" and torch.cuda.is_available() else torch.device("cpu")


def autocast(device: torch.device, dtype: str):
    """The forward passes' precision: a no-op for ``float32`` (the numbers stay bit-identical),
    bf16 autocast otherwise (weights and optimizer state stay fp32: the master copy)."""
    import contextlib

    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, dtype))
