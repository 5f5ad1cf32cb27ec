"""Checks a job runs before it writes anything: the model paths its config names, and the finished
stages of the run directory it will reuse. A bad input raises ``ConfigError`` (naming the key) or
``DataError`` (naming the file, column and row); the job exits 2 with the run directory untouched
(``jobs.frontier`` calls ``preflight`` before saving its config or opening its log)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from orchestrator.config.schema import ConfigError, ModelConfig
from orchestrator.data import tables as D
from orchestrator.data.checkpoint import CheckpointError, check_safetensors

# the tables a finished stage may hold, by file name -> schema (others must merely be readable)
SCHEMAS = {"prompts.parquet": D.PROMPTS, "samples_label.parquet": D.SAMPLES, "samples_bon.parquet": D.SAMPLES}
PICKLED = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt")


def preflight(cfg, run_dir: Path) -> None:
    check_model_paths(cfg)
    check_run_dir(run_dir)


def _models(obj, prefix: str = ""):
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, ModelConfig):
            yield prefix + f.name, v
        elif dataclasses.is_dataclass(v):
            yield from _models(v, f"{prefix}{f.name}.")


def check_model_paths(cfg) -> None:
    """Every ``*.path`` that names a local directory must hold a loadable model: config.json and
    safetensors weights whose headers parse. Pickled weights (``*.bin``, ``*.pt``) are refused: they
    could run code when loaded. A path that is not local is a hub id, resolved when loaded."""
    for key, m in _models(cfg):
        if not m.path:
            continue
        p = Path(m.path).expanduser()
        local = p.exists() or m.path.startswith((".", "/", "~")) or m.path.count("/") >= 2
        if not local:
            continue
        if not p.is_dir():
            raise ConfigError(f"{key}.path: {m.path}: no such model directory")
        if not (p / "config.json").is_file():
            raise ConfigError(f"{key}.path: {m.path}: no config.json (not a save_pretrained directory)")
        weights = sorted(p.glob("*.safetensors"))
        if not weights:
            pickled = [x.name for pat in PICKLED for x in p.glob(pat)]
            raise ConfigError(f"{key}.path: {m.path}: no *.safetensors weights"
                              + (f" ({', '.join(pickled)} are pickled: convert them to safetensors)" if pickled else ""))
        for w in weights:
            try:
                check_safetensors(w)
            except CheckpointError as e:
                raise ConfigError(f"{key}.path: {w}: {e}") from None


def check_run_dir(run_dir: Path) -> None:
    """Every finished stage the run would reuse: DONE.json parses, every table's footer reads (with
    its schema where it has one), the labels are finite and within [0, 1], every safetensors header
    parses."""
    for done in sorted(Path(run_dir).glob("stages/*/DONE.json")):
        stage = done.parent
        if stage.name.endswith(".tmp"):
            continue
        try:
            json.loads(done.read_text())
        except (OSError, ValueError) as e:
            raise D.DataError(f"{done}: unreadable ({e.__class__.__name__}); delete the stage directory "
                              f"{stage.name} to recompute it") from None
        for f in sorted(stage.rglob("*.parquet")):
            if f.name == "preferences.parquet":  # the labels, row by row (NaN, outside [0, 1])
                D.check_labels(D.read_table(f, D.PREFERENCES, f.name), f)
            else:  # the footer only: start-up reads no sample pool in full
                D.check_schema(f, SCHEMAS.get(f.name, {}), f.name)
        for f in sorted(stage.rglob("*.safetensors")):
            try:
                check_safetensors(f)
            except CheckpointError as e:
                raise D.DataError(f"{f}: {e}; delete the stage directory {stage.name} to recompute it") from None
