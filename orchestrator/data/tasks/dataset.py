"""Bring-your-own data: prompts, demonstrations and preference pairs from anything ``datasets`` reads.

A local ``.parquet``, ``.jsonl`` / ``.json`` or ``.csv`` file, a local dataset directory, or a hub
id (with ``split``). Columns are named by the config; a missing column, an empty dataset, or a row
whose value is not a non-empty string raises ``DataError`` naming the config key, the column and the
row (the job exits 2 with nothing written).
"""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.data.tables import DataError

BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}


def is_local(path: str) -> bool:
    """A reference that names a local path rather than a hub id (``org/name``)."""
    return Path(path).expanduser().exists() or path.startswith((".", "/", "~")) or path.count("/") >= 2


def fingerprint(path: str, split: str, subset: str = "") -> dict:
    """What identifies the data for a stage's cache key: a local file by size and modification
    time, a hub id by its id and split."""
    p = Path(path).expanduser()
    if p.is_file():
        st = p.stat()
        return {"path": str(p), "split": split, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if p.is_dir():
        files = sorted(x for x in p.rglob("*") if x.is_file())
        return {"path": str(p), "split": split, "files": [(str(x.relative_to(p)), x.stat().st_size,
                                                           x.stat().st_mtime_ns) for x in files]}
    return {"path": path, "split": split, **({"subset": subset} if subset else {})}


def _load(path: str, split: str, key: str, subset: str = ""):
    import datasets

    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()
    p = Path(path).expanduser()
    try:
        if p.is_file():
            if p.stat().st_size == 0:
                raise DataError(f"{key}: {path} (split {split!r}) is empty")
            builder = BUILDERS.get("".join(p.suffixes[-1:]).lower())
            if builder is None:
                raise DataError(f"{key}: {path}: unknown file type {p.suffix!r}; use "
                                f"{', '.join(sorted(BUILDERS))} or a dataset directory / hub id")
            return datasets.load_dataset(builder, data_files=str(p), split="train")
        if is_local(path) and not p.exists():
            raise DataError(f"{key}: {path}: no such file or directory")
        return datasets.load_dataset(str(p) if p.is_dir() else path, subset or None, split=split)
    except DataError:
        raise
    except Exception as e:  # a hub id offline, a malformed file, an unknown split
        if "corresponds to no data" in str(e):  # datasets' word for a file without rows
            raise DataError(f"{key}: {path} (split {split!r}) is empty") from None
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DataError(f"{key}: {path}: cannot be read ({e.__class__.__name__}: {msg[:300]})") from None


def read_columns(path: str, split: str, columns: dict[str, str], key: str, subset: str = "") -> dict[str, list[str]]:
    """``{name: column}`` of the dataset at ``path`` -> ``{name: [str, ...]}``; ``key`` names the
    config section in errors (``task.dataset``); ``subset``: a hub dataset's configuration name."""
    ds = _load(path, split, f"{key}.path", subset)
    for name, col in columns.items():
        if col not in ds.column_names:
            raise DataError(f"{key}.{name}_column: {path} has no column {col!r} (columns: "
                            f"{', '.join(ds.column_names)})")
    if len(ds) == 0:
        raise DataError(f"{key}.path: {path} (split {split!r}) is empty")
    out = {}
    for name, col in columns.items():
        vals = ds[col]
        for i, v in enumerate(vals):
            if not isinstance(v, str) or not v.strip():
                raise DataError(f"{key}: {path}: column {col!r}, row {i}: {v!r} is not a non-empty string")
        out[name] = list(vals)
    return out


def read_preference_columns(path: str, split: str, columns: dict[str, str], key: str,
                            subset: str = "") -> dict[str, list[float | None]]:
    """``{name: column}`` of per-row preferences in [0, 1] (empty cells: None) -> ``{name: [...]}``;
    a missing column, or a cell that is not a number in [0, 1], is a ``DataError`` naming the key,
    the column and the row (``label.dataset.principle_columns``; issue 22)."""
    import math

    ds = _load(path, split, f"{key}.path", subset)
    out = {}
    for name, col in columns.items():
        if col not in ds.column_names:
            raise DataError(f"{key}.principle_columns.{name}: {path} has no column {col!r} (columns: "
                            f"{', '.join(ds.column_names)})")
        vals = []
        for i, v in enumerate(ds[col]):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                vals.append(None)
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise DataError(f"{key}.principle_columns.{name}: {path}: column {col!r}, row {i}: {v!r} is not a "
                                "preference in [0, 1] (1: chosen better on this principle, 0: rejected; empty: none)")
            vals.append(float(v))
        out[name] = vals
    return out


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
