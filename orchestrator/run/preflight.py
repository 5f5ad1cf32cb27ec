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
from orchestrator.data.tasks.dataset import is_local

# the tables a finished stage may hold, by file name -> schema (others must merely be readable)
SCHEMAS = {"prompts.parquet": D.PROMPTS, "samples_label.parquet": D.SAMPLES, "samples_bon.parquet": D.SAMPLES}
PICKLED = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt")


def preflight(cfg, run_dir: Path) -> None:
    check_backends(cfg)
    check_model_paths(cfg)
    if hasattr(cfg, "gold"):  # the frontier job's bring-your-own models and data
        check_own_models(cfg)
        check_datasets(cfg)
    check_run_dir(run_dir)


def check_backends(cfg) -> None:
    """A learner on ``backend: deepspeed`` needs DeepSpeed installed (the ``deepspeed`` extra)."""
    import importlib.util

    cluster = getattr(cfg, "cluster", None)
    for key, role in (("cluster.learner", getattr(cluster, "learner", None)),
                      ("cluster.rl.learner", getattr(getattr(cluster, "rl", None), "learner", None))):
        if getattr(role, "backend", "torch") == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
            raise ConfigError(f"{key}.backend: deepspeed is not installed; pip install -e '.[deepspeed]'")


def _model_refs(cfg):
    """(key, reference, role) of every model the config names by path or hub id."""
    if cfg.sft.policy.path:
        yield "sft.policy.path", cfg.sft.policy.path, "policy"
    for i, m in enumerate(cfg.proxy.models):
        yield f"proxy.models[{i}]", m, "proxy"
    for i, m in enumerate(cfg.gold.models):
        yield f"gold.models[{i}]", m, "gold"


def check_own_models(cfg) -> None:
    """Every model of ``proxy.models`` / ``gold.models`` as a ``*.path`` is checked (weights, no
    pickles); a gold model must be a sequence classifier with a one-label head; every model's
    tokenizer must load, have a pad or an eos token, and its chat template (when used) must render
    a prompt and a scored pair."""
    from orchestrator.nn.codec import load_codec

    for key, ref, role in _model_refs(cfg):
        if role != "policy":  # the policy's path is a ModelConfig.path: check_model_paths has it
            check_model_paths_of([(key, ref)])
        local = Path(ref).expanduser()
        if role == "gold" and (local / "config.json").is_file():
            conf = json.loads((local / "config.json").read_text())
            arch = (conf.get("architectures") or [""])[0]
            labels = conf.get("num_labels", len(conf.get("id2label") or {}) or 2)
            if not arch.endswith("ForSequenceClassification") or labels != 1:
                raise ConfigError(f"{key}: {ref}: a gold reward model needs a one-label sequence-classification head "
                                  f"(it has {arch or 'no architecture'} with {labels} label(s))")
        if role == "policy" and not cfg.gold.models and cfg.task.name == "synthetic":
            continue  # the synthetic task's own policy checkpoint: its tokenizer is the task's
        try:
            codec = load_codec(ref, cfg.task.dataset.chat_template)
            codec.prompt("hello")
            codec.score_input("hello", "hi")
        except (OSError, ValueError) as e:  # CodecError is a ValueError; no tokenizer files: OSError
            msg = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
            raise ConfigError(f"{key}: {ref}: {msg[:300]}") from None


def check_datasets(cfg) -> None:
    """Each dataset the config reads: it loads, has the named columns, is not empty, and every row's
    value is a non-empty string (``DataError`` naming the key, column and row)."""
    from orchestrator.data.tasks.dataset import read_columns

    if cfg.task.name == "dataset":
        d = cfg.task.dataset
        read_columns(d.path, d.split, {"prompt": d.prompt_column}, "task.dataset", d.subset)
        if cfg.sft.steps and cfg.sft.dataset.path:
            d = cfg.sft.dataset
            read_columns(d.path, d.split, {"prompt": d.prompt_column, "response": d.response_column}, "sft.dataset", d.subset)
    if cfg.label.source == "dataset":
        d = cfg.label.dataset
        read_columns(d.path, d.split, {"prompt": d.prompt_column, "chosen": d.chosen_column,
                                       "rejected": d.rejected_column}, "label.dataset", d.subset)


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
    check_model_paths_of([(f"{key}.path", m.path) for key, m in _models(cfg) if m.path])


def check_model_paths_of(refs: list[tuple[str, str]]) -> None:
    """``check_model_paths`` of (config key, path or hub id) pairs."""
    for key, ref in refs:
        if not is_local(ref):  # a hub id, resolved when loaded
            continue
        p = Path(ref).expanduser()
        if not p.is_dir():
            raise ConfigError(f"{key}: {ref}: no such model directory")
        if not (p / "config.json").is_file():
            raise ConfigError(f"{key}: {ref}: no config.json (not a save_pretrained directory)")
        weights = sorted(p.glob("*.safetensors"))
        if not weights:
            pickled = [x.name for pat in PICKLED for x in p.glob(pat)]
            raise ConfigError(f"{key}: {ref}: no *.safetensors weights"
                              + (f" ({', '.join(pickled)} are pickled: convert them to safetensors)" if pickled else ""))
        for w in weights:
            try:
                check_safetensors(w)
            except CheckpointError as e:
                raise ConfigError(f"{key}: {w}: {e}") from None


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
