"""Stages cached in the run directory by a hash of their inputs.

A stage's output lives in ``RUN/stages/NAME-HASH/``; it is written into ``NAME-HASH.tmp`` and
renamed when complete, with ``DONE.json`` (its metadata and timing) inside. A rerun with the same
inputs finds ``DONE.json`` and skips the work; a killed stage leaves only a ``.tmp`` directory that
the next run discards. Stages that run in parallel use ``begin`` / ``commit`` directly.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.config.schema import digest

log = logging.getLogger("rlhf_frontier")


@dataclass(frozen=True)
class StageResult:
    name: str
    key: str
    dir: Path
    meta: dict
    cached: bool


@dataclass(frozen=True)
class Stage:
    name: str
    inputs: Any
    key: str
    dir: Path

    @property
    def tmp(self) -> Path:
        return self.dir.with_name(self.dir.name + ".tmp")

    @property
    def done(self) -> bool:
        return (self.dir / "DONE.json").is_file()


def stage(run_dir: Path, name: str, inputs: Any) -> Stage:
    key = digest(inputs)[:16]
    return Stage(name, inputs, key, Path(run_dir) / "stages" / f"{name}-{key}")


def cached(s: Stage) -> StageResult:
    log.info("stage %-12s cached  (%s)", s.name, s.dir.name)
    return StageResult(s.name, s.key, s.dir, json.loads((s.dir / "DONE.json").read_text()), True)


def begin(s: Stage) -> Path:
    """A fresh temporary directory for the stage's output."""
    shutil.rmtree(s.tmp, ignore_errors=True)
    s.tmp.mkdir(parents=True)
    log.info("stage %-12s running (%s)", s.name, s.dir.name)
    return s.tmp


def commit(s: Stage, meta: dict) -> StageResult:
    """Write DONE.json and move the finished output into place."""
    meta = {**meta, "inputs": json.loads(json.dumps(s.inputs, default=str))}
    (s.tmp / "DONE.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    shutil.rmtree(s.dir, ignore_errors=True)
    s.tmp.rename(s.dir)
    log.info("stage %-12s done in %.1f s", s.name, meta.get("seconds", float("nan")))
    return StageResult(s.name, s.key, s.dir, meta, False)


def run_stage(run_dir: Path, name: str, inputs: Any, fn: Callable[[Path], dict]) -> StageResult:
    """Run ``fn(tmp_dir) -> meta`` unless a finished stage with the same inputs exists."""
    s = stage(run_dir, name, inputs)
    if s.done:
        return cached(s)
    tmp = begin(s)
    t0 = time.perf_counter()
    meta = dict(fn(tmp) or {})
    meta.setdefault("seconds", round(time.perf_counter() - t0, 3))
    return commit(s, meta)


def proxy_name(p: StageResult) -> str:
    """A trained proxy's name: ``proxy-<size>``, plus ``-ai`` when trained on the judge's labels."""
    return p.meta.get("name") or f"proxy-{p.meta['size']}"


def held_out_pairs(cfg, task: StageResult, arrays: dict) -> np.ndarray:
    """``[pairs]`` bool: the pairs whose prompt is of a ``proxy.holdout_families`` family (by the task's
    prompt table; pairs of prompts it does not hold -- dataset labels -- are never held out)."""
    if not cfg.proxy.holdout_families:
        return np.zeros(len(arrays["group"]), bool)
    fam = family_of_prompt(task)
    held = set(cfg.proxy.holdout_families)
    return np.array([fam.get(int(g)) in held for g in arrays["group"]], bool)


def family_of_prompt(task: StageResult) -> dict[int, str]:
    """{prompt_id: family} of the task's prompt table."""
    import pyarrow.parquet as pq

    t = pq.read_table(task.dir / "prompts.parquet", columns=["prompt_id", "family"]).to_pydict()
    return dict(zip(t["prompt_id"], t["family"]))
