"""Stages cached in the run directory by a hash of their inputs.

A stage's output lives in ``RUN/stages/NAME-HASH/``; it is written into a temporary directory and
renamed when complete, with ``DONE.json`` (its metadata and timing) inside. A rerun with the same
inputs finds ``DONE.json`` and skips the work; a killed stage leaves only a ``.tmp`` directory that
the next run discards.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from orchestrator.config import digest

log = logging.getLogger("rlhf_frontier")


@dataclass(frozen=True)
class StageResult:
    name: str
    key: str
    dir: Path
    meta: dict
    cached: bool


def stage_dir(run_dir: Path, name: str, inputs: Any) -> tuple[str, Path]:
    key = digest(inputs)[:16]
    return key, Path(run_dir) / "stages" / f"{name}-{key}"


def run_stage(run_dir: Path, name: str, inputs: Any, fn: Callable[[Path], dict]) -> StageResult:
    """Run ``fn(tmp_dir) -> meta`` unless a finished stage with the same inputs exists."""
    key, final = stage_dir(run_dir, name, inputs)
    done = final / "DONE.json"
    if done.is_file():
        meta = json.loads(done.read_text())
        log.info("stage %-12s cached  (%s)", name, final.name)
        return StageResult(name, key, final, meta, True)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log.info("stage %-12s running (%s)", name, final.name)
    t0 = time.perf_counter()
    meta = dict(fn(tmp) or {})
    meta.setdefault("seconds", round(time.perf_counter() - t0, 3))
    meta["inputs"] = json.loads(json.dumps(inputs, default=str))
    (tmp / "DONE.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    log.info("stage %-12s done in %.1f s", name, meta["seconds"])
    return StageResult(name, key, final, meta, False)
