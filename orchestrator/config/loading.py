"""Loading a config tree: YAML + ``key.sub=value`` overrides -> frozen dataclasses, strictly typed.

Generic over any dataclass tree (``orchestrator.config.schema`` holds the trees themselves). Unknown keys
are an error (torchtune's parser), never ignored; every error names the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A user error in the configuration: the job exits with code 2 and prints this one line."""


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


# --------------------------------------------------------------------------------------------
# loading


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return build(tp, value, prefix=key + ".")
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp, _) = typing.get_args(tp)
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        k_tp, v_tp = typing.get_args(tp)
        return {_coerce(k, k_tp, key): _coerce(v, v_tp, f"{key}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{key}: unsupported union type")  # no optional fields by design
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")


def build(cls, data: dict, prefix: str = ""):
    """Build dataclass ``cls`` from a mapping; unknown keys and bad values raise ``ConfigError``."""
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key; known keys of {prefix or 'the config'}: "
                          f"{', '.join(sorted(types_))}")
    kwargs = {k: _coerce(v, types_[k], prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{prefix}{e}") from None


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {p} is not a section")
    node[parts[-1]] = value


def parse_overrides(items: list[str]) -> dict:
    """``["sft.steps=10", "proxy.sizes=[1x16,2x32]"]`` -> nested dict; values parsed as YAML."""
    tree: dict = {}
    for item in items:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"{item}: an override must look like key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"{key}: cannot parse value {raw!r}: {e.__class__.__name__}") from None
        _set_dotted(tree, key, value)
    return tree


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config: {p}: no such file")
    try:
        data = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"--config: {p}:{where} malformed YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {p}: the top level must be a mapping of keys")
    return data


def load(cls, path: str | Path | None, overrides: list[str] = ()):
    """Load ``cls`` from a YAML file (or defaults) plus ``key.sub=value`` overrides."""
    data = load_yaml(path) if path else {}
    return build(cls, _merge(data, parse_overrides(list(overrides))))


def to_dict(cfg) -> dict:
    d = dataclasses.asdict(cfg)
    return json.loads(json.dumps(d))  # tuples -> lists


def _plain(x: Any) -> Any:
    """JSON-able form of a config value (dataclasses to dicts, tuples to lists)."""
    if dataclasses.is_dataclass(x):
        return to_dict(x)
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return json.loads(json.dumps(x, default=str))


def non_default(cfg, ref=None) -> dict:
    """The leaves of a config that differ from its class's defaults, nested like the config: what a
    run actually chose. Adding a field with a default leaves this (and ``config_digest``) unchanged."""
    if ref is None:
        try:
            ref = type(cfg)()
        except (TypeError, ValueError):  # a class without full defaults: every leaf counts
            return to_dict(cfg)
    out = {}
    for f in dataclasses.fields(cfg):
        v, r = getattr(cfg, f.name), getattr(ref, f.name)
        if dataclasses.is_dataclass(v) and type(v) is type(r):
            sub = non_default(v, r)
            if sub:
                out[f.name] = sub
        elif _plain(v) != _plain(r):
            out[f.name] = _plain(v)
    return out


def config_digest(cfg) -> str:
    """The hash that names a run of a whole config (default run directories, ``frontier.json``'s
    ``config_hash``, the check that a run directory holds this config): of its non-default leaves
    only, so a new config field with a default does not rename or orphan existing runs. Sections a
    config names in ``digest_ignores()`` (analyses of a finished run's stages, keyed by their own
    stages) are left out: changing them reuses the run."""
    d = non_default(cfg)
    if isinstance(d, dict) and hasattr(cfg, "digest_ignores"):
        for path in cfg.digest_ignores():  # dotted keys
            *head, last = path.split(".")
            node = d
            for k in head:
                node = node.get(k) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(last, None)
        for k in [k for k, v in d.items() if v == {}]:  # a section left empty counts as absent
            d.pop(k)
    return digest(d)


def digest(obj: Any) -> str:
    """Stable hash of a config subtree (or anything JSON-able): sha256 of canonical JSON."""
    if dataclasses.is_dataclass(obj):
        obj = to_dict(obj)
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
