"""Where an actor runs: shared by every role (placement tests ask each actor ``where()``)."""

from __future__ import annotations

import os


def where() -> dict:
    """The calling process and its Ray node."""
    import ray

    return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}
