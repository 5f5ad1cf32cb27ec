"""Data on disk: parquet tables with fixed schemas (DESIGN.md "Contracts"), validated on read.

Every table is readable by ``datasets.load_dataset("parquet", data_files=...)``. A bad file raises
``DataError`` naming the file, column and row -- the job turns it into exit code 2.
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PROMPTS = {"prompt_id": pa.int64(), "prompt": pa.string(), "family": pa.string(), "split": pa.string(),
           "meta": pa.string()}
SAMPLES = {"prompt_id": pa.int64(), "sample_id": pa.int64(), "response": pa.string(),
           "n_tokens": pa.int64(), "source": pa.string()}
PREFERENCES = {"pair_id": pa.int64(), "prompt_id": pa.int64(), "prompt": pa.string(),
               "response_a": pa.string(), "response_b": pa.string(), "p_a": pa.float64(),
               "labeler": pa.string(), "principle": pa.string(), "rationale": pa.string()}


class DataError(ValueError):
    """A user-supplied or on-disk table is unusable; the message names file, column and row."""


def write_table(rows: dict[str, list] | pa.Table, path: str | Path) -> Path:
    """Write a parquet file atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = rows if isinstance(rows, pa.Table) else pa.table(rows)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def _open(path: str | Path, name: str, read):
    path = Path(path)
    label = name or path.name
    if not path.is_file():
        raise DataError(f"{label}: {path}: no such file")
    try:
        return path, label, read(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{label}: {path}: not a readable parquet file ({e.__class__.__name__})") from None


def _check_columns(found: pa.Schema, schema: dict[str, pa.DataType], path: Path, label: str) -> None:
    for col, tp in schema.items():
        if col not in found.names:
            raise DataError(f"{label}: {path}: missing column {col!r} (has {', '.join(found.names)})")
        t = found.field(col).type
        if not (t == tp or (pa.types.is_integer(tp) and pa.types.is_integer(t))
                or (pa.types.is_floating(tp) and (pa.types.is_floating(t) or pa.types.is_integer(t)))):
            raise DataError(f"{label}: {path}: column {col!r} has type {t}, expected {tp}")


def check_schema(path: str | Path, schema: dict[str, pa.DataType], name: str = "") -> None:
    """The cheap check (the file's footer only): a readable parquet file with the required columns
    and types."""
    path, label, found = _open(path, name, pq.read_schema)
    _check_columns(found, schema, path, label)


def read_table(path: str | Path, schema: dict[str, pa.DataType], name: str = "") -> pa.Table:
    """Read and validate: required columns with the right types, no nulls, no NaN in floats."""
    path, label, table = _open(path, name, pq.read_table)
    _check_columns(table.schema, schema, path, label)
    for col in schema:
        arr = table.column(col)
        if arr.null_count:
            row = next(i for i, v in enumerate(arr.to_pylist()) if v is None)
            raise DataError(f"{label}: {path}: column {col!r} row {row} is null")
        if pa.types.is_floating(arr.type):
            for i, v in enumerate(arr.to_pylist()):
                if math.isnan(v):
                    raise DataError(f"{label}: {path}: column {col!r} row {i} is NaN")
    return table


def check_labels(table: pa.Table, path: str | Path) -> None:
    """Soft labels must lie in [0, 1]."""
    for i, v in enumerate(table.column("p_a").to_pylist()):
        if not 0.0 <= v <= 1.0:
            raise DataError(f"preferences: {path}: column 'p_a' row {i} is {v}, outside [0, 1]")


def preference_arrays(path: Path, val_fraction: float, seed: int) -> dict:
    """Preferences parquet -> unique texts, pair indices, soft labels and a by-prompt validation split."""
    tab = read_table(path, PREFERENCES, "preferences")
    check_labels(tab, path)
    t = tab.to_pydict()
    texts: dict[tuple[str, str], int] = {}
    a = [texts.setdefault((p, r), len(texts)) for p, r in zip(t["prompt"], t["response_a"])]
    b = [texts.setdefault((p, r), len(texts)) for p, r in zip(t["prompt"], t["response_b"])]
    groups = sorted(set(t["prompt_id"]))
    rng = random.Random(seed)
    val_groups = set(rng.sample(groups, max(1, int(len(groups) * val_fraction))))
    return {"texts": list(texts), "a": a, "b": b, "p_a": t["p_a"], "group": t["prompt_id"],
            "val": [g in val_groups for g in t["prompt_id"]]}
