"""The command line every job shares (DESIGN.md "Contracts"):

``python -m jobs.NAME --config FILE [--run-dir DIR] [--resume] [key.sub=value ...]``

User errors (bad config, bad data, bad run directory) print one line naming the problem and exit
with code 2, before anything is written to an existing run directory.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import yaml

from orchestrator.config.schema import ConfigError, build, config_digest, load, to_dict
from orchestrator.data.tables import DataError
from orchestrator.data.tasks.dataset import (
    is_local as _local,  # a local path, not a hub id
)

EXIT_USER_ERROR = 2


def parser(prog: str, description: str, default_config: Path, resume_dir: bool = False) -> argparse.ArgumentParser:
    """The shared options. ``resume_dir``: ``--resume RUN_DIR`` (also accepted: ``--run-dir DIR --resume``)."""
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="overrides: any config key as key.sub=value, e.g. seed=3 "
                                       "sft.steps=100 'proxy.sizes=[1x16,2x64]'")
    p.add_argument("--config", default=str(default_config), help=f"YAML config (default: {default_config})")
    p.add_argument("--run-dir", default=None, help="run directory (default: runs/<job>-<config hash>)")
    if resume_dir:
        p.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_DIR",
                       help="continue the run in RUN_DIR (or --run-dir); its saved config is used, overrides must agree")
    else:
        p.add_argument("--resume", action="store_true",
                       help="continue the run in --run-dir; its saved config is used, overrides must agree")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    return p


def user_error(msg: str) -> NoReturn:  # noqa: F821
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def absolute(path: str | Path) -> Path:
    """``path`` made absolute against this process's working directory (``~`` expanded), once,
    where the command line is parsed: Tune runs every trial in a working directory of its own, and
    actors, Serve replicas and Ray jobs start elsewhere, so a relative path handed to any of them
    would name another file (DESIGN.md "Contracts")."""
    return Path(os.path.abspath(Path(path).expanduser()))




def absolute_paths(cls, cfg):
    """The config with every local path in it absolute: each ``*.path`` that names a local
    directory, ``label.ai.constitution``, and a local ``label.ai.judge`` (backend hf). Hub ids and
    empty values stay as they are."""
    from orchestrator.nn import tiny

    data = to_dict(cfg)
    changed = False

    def ref(v: str, key: str) -> str:
        """A model or data reference: ``tiny:...`` built and replaced by its local path, a local
        path made absolute, a hub id as it is."""
        if tiny.is_tiny(v):
            try:
                tiny.check(v, key)
            except ValueError as e:
                raise ConfigError(str(e)) from None
            return tiny.resolve(v)
        return str(absolute(v)) if _local(v) else v

    def walk(node: dict, prefix: str = "") -> None:
        nonlocal changed
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif k == "models" and isinstance(v, (list, tuple)):
                new = [ref(x, f"{prefix}{k}[{i}]") if isinstance(x, str) and x else x for i, x in enumerate(v)]
                if list(new) != list(v):
                    node[k], changed = new, True
            elif k == "path" and isinstance(v, str) and tiny.is_tiny(v):
                node[k], changed = ref(v, prefix + k), True
            elif isinstance(v, str) and v and (
                    (k == "path" and _local(v)) or k == "constitution"
                    or (k == "judge" and node.get("backend") == "hf" and Path(v).expanduser().exists())):
                a = str(absolute(v))
                if a != v:
                    node[k], changed = a, True

    walk(data)
    return build(cls, data) if changed else cfg


def resolve(job: str, cls, args) -> tuple[object, Path]:
    """Load the config and pick the run directory, refusing anything that would clobber a run.
    Every path that leaves here (the run directory, the config, model and constitution paths in
    the config) is absolute."""
    for name in ("config", "run_dir"):
        if getattr(args, name, None):
            setattr(args, name, str(absolute(getattr(args, name))))
    if isinstance(args.resume, str):  # --resume RUN_DIR
        args.resume = str(absolute(args.resume))
        if args.run_dir and Path(args.run_dir) != Path(args.resume):
            user_error(f"--resume {args.resume} and --run-dir {args.run_dir} name different directories")
        args.run_dir, args.resume = args.resume, True
    try:
        if args.resume:
            if not args.run_dir:
                raise ConfigError("--resume needs --run-dir")
            saved = Path(args.run_dir) / "config.yaml"
            if not Path(args.run_dir).is_dir():
                raise ConfigError(f"--run-dir: {args.run_dir}: no such directory to resume")
            if not saved.is_file():
                raise ConfigError(f"--run-dir: {args.run_dir}: no config.yaml, not a run directory")
            cfg = load(cls, saved, args.overrides)
        else:
            cfg = load(cls, args.config, args.overrides)
        cfg = absolute_paths(cls, cfg)
    except ConfigError as e:
        user_error(str(e))
    run_dir = Path(args.run_dir) if args.run_dir else absolute("runs") / f"{job}-{config_digest(cfg)[:10]}"
    if run_dir.exists() and not run_dir.is_dir():
        user_error(f"--run-dir: {run_dir} exists and is not a directory")
    saved = run_dir / "config.yaml"
    if saved.is_file():
        try:
            prev = load(cls, saved)
        except ConfigError as e:
            user_error(f"--run-dir: {run_dir}/config.yaml is unreadable ({e}); choose another --run-dir")
        if config_digest(prev) != config_digest(cfg):
            user_error(f"--run-dir: {run_dir} holds a run of another config (hash {config_digest(prev)[:10]}, "
                       f"this one {config_digest(cfg)[:10]}); choose another --run-dir or pass --resume")
    elif run_dir.is_dir() and any(run_dir.iterdir()):
        user_error(f"--run-dir: {run_dir} is not empty and holds no config.yaml; choose another --run-dir")
    if not run_dir.exists():
        parent = run_dir.parent
        while not parent.exists():
            parent = parent.parent
        if not os.access(parent, os.W_OK):
            user_error(f"--run-dir: cannot create {run_dir}: {parent} is not writable")
    elif not os.access(run_dir, os.W_OK | os.X_OK):
        user_error(f"--run-dir: {run_dir} is not writable")
    return cfg, run_dir


def save_config(cfg, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    if not path.is_file():
        tmp = path.with_name("config.yaml.tmp")
        tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        tmp.replace(path)


class _Stderr(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a record is emitted, not when it was made (a
    caller that swaps ``sys.stderr`` -- pytest's capture, ``contextlib.redirect_stderr`` -- gets
    the lines that follow)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ / setStream assign it: the property decides
        pass


def setup_logging(run_dir: Path | None = None, process_stderr: bool = False) -> None:
    """INFO lines to stderr (and ``RUN/job.log``). ``process_stderr``: to the process's own stderr
    (``sys.__stderr__``, which Ray forwards to the driver), for Tune trial processes: Tune
    (``log_to_file``) swaps ``sys.stderr`` for a tee into the trial's log file and closes it when a
    reused process takes the next trial, and a trial after that one wrote into the closed tee --
    every line lost (a resumed trial's ``resumed from`` among them)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.__stderr__) if process_stderr else _Stderr()]
    if run_dir is not None:
        handlers.append(logging.FileHandler(run_dir / "job.log"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        handlers=handlers, force=True)


def unbind_trial_streams() -> int:
    """Point every logging handler that writes to this trial's ``sys.stderr`` / ``sys.stdout`` --
    Tune's tees into the trial's log files -- at the process's own streams; returns how many.

    torch (~40 handlers), transformers and huggingface_hub make their handlers when first imported,
    bound to the streams of that moment: inside the first trial of a process, that trial's tees.
    Tune closes those when the process takes its next trial (or ends), and every later flush -- at
    the latest at the process's exit -- printed "ValueError when calling 'flush' on stream", 40+
    lines per trial process on the user's console."""
    tees = {id(s) for s in (sys.stderr, sys.stdout) if s is not sys.__stderr__ and s is not sys.__stdout__}
    # every handler ever made, held by a logger or not (logging keeps weak references to all of
    # them, the list it flushes at exit)
    handlers = {r() for r in logging._handlerList} - {None}
    n = 0
    for h in handlers:
        if not isinstance(h, logging.StreamHandler) or isinstance(getattr(type(h), "stream", None), property):
            continue  # (a ``stream`` property follows sys.stderr by itself)
        own = sys.__stdout__ if h.stream is sys.stdout else sys.__stderr__
        flush = vars(h).get("flush")  # transformers pins its handler's flush to sys.stderr.flush
        if flush is not None and id(getattr(flush, "__self__", None)) in tees:
            h.flush = own.flush
            n += 1
        if id(h.stream) in tees:
            h.setStream(own)
            n += 1
    return n


def joins_cluster(cluster) -> bool:
    """True when the job joins a running Ray cluster: ``cluster.address``, or ``RAY_ADDRESS`` (set
    for every driver that ``ray job submit`` starts)."""
    return bool(cluster.address or os.environ.get("RAY_ADDRESS"))


def local_resources(cluster) -> dict:
    """What a local Ray started by ``init_ray`` will offer: known before starting it, so a config
    asking for more fails before Ray prints a line."""
    import torch

    return {"CPU": float(cluster.num_cpus or os.cpu_count()), "GPU": float(torch.cuda.device_count())}


def init_ray(cluster) -> dict:
    """Join the cluster (``cluster.address`` or ``RAY_ADDRESS``) or start a local Ray (dashboard on
    ``dashboard_host`` when enabled). Inside a Ray job the job's own runtime_env applies."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return ray.cluster_resources()
    kwargs: dict = {"log_to_driver": True}
    if joins_cluster(cluster):
        ray.init(address=cluster.address or os.environ["RAY_ADDRESS"], **kwargs)
    else:
        kwargs["runtime_env"] = {"env_vars": {"TOKENIZERS_PARALLELISM": "false"}}
        kwargs["include_dashboard"] = cluster.dashboard
        if cluster.dashboard:
            kwargs["dashboard_host"] = cluster.dashboard_host
        # address="local": a new Ray of our own, even when a `ray start` head runs on this machine
        ray.init(address="local", num_cpus=cluster.num_cpus or os.cpu_count(), **kwargs)
    return ray.cluster_resources()


__all__ = [
    "EXIT_USER_ERROR",
    "ConfigError",
    "DataError",
    "init_ray",
    "joins_cluster",
    "local_resources",
    "parser",
    "resolve",
    "save_config",
    "setup_logging",
    "user_error",
]
