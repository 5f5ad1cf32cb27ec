"""The sweep's wandb logging (``sweep.wandb``): Ray Tune's ``WandbLoggerCallback`` without the API
key in any runtime_env, with wandb's temporary files kept out of the run directory and /tmp."""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import ray

from orchestrator.config.schema import FrontierConfig


def wandb_tmp_prefix(run_dir: Path) -> str:
    """Prefix of the temporary directory the sweep's wandb logging actors use, one per run dir."""
    digest = hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:12]
    return f"rlhf-frontier-wandb-{digest}-"


OWNER = "owner.pid"  # in each sweep's wandb temporary directory: the job process that made it


def clear_stale_tmp(run_dir: Path) -> list[Path]:
    """Remove the wandb temporary directories of earlier jobs on ``run_dir`` whose process is gone
    (a job killed with SIGKILL runs no exit handler, so its directory stayed); returns them. Called
    as a sweep starts, fresh or restored (a restored experiment brings its pickled callback). A
    directory whose owner still runs, or that names none, is left alone."""
    gone = []
    for d in Path(tempfile.gettempdir()).glob(wandb_tmp_prefix(run_dir) + "*"):
        try:
            pid = int((d / OWNER).read_text())
        except (OSError, ValueError):
            continue
        try:
            os.kill(pid, 0)  # signal 0: does the process exist?
            continue
        except ProcessLookupError:
            pass
        except PermissionError:  # another user's live process
            continue
        shutil.rmtree(d, ignore_errors=True)
        gone.append(d)
    return gone


def wandb_callbacks(cfg: FrontierConfig, run_dir: Path) -> list:
    """wandb when enabled: offline unless the user set ``WANDB_MODE``; the API key only ever comes
    from the environment (``WANDB_API_KEY``), never from config or logs."""
    if not cfg.sweep.wandb:
        return []
    import wandb
    from ray.air.integrations.wandb import WandbLoggerCallback

    (run_dir / "wandb").mkdir(exist_ok=True)

    class KeylessWandbLoggerCallback(WandbLoggerCallback):
        """Ray's callback hands ``WANDB_API_KEY`` to its logging actor through a runtime_env, and
        Ray writes every runtime_env, env_vars included, to the node's runtime_env_agent.log. The
        actor inherits the key from its node's or job's environment anyway: pass none."""

        def _start_logging_actor(self, trial, exclude_results, **kwargs):
            if not self._remote_logger_class:
                from ray.air.integrations.wandb import _force_on_current_node

                # wandb makes two TemporaryDirectory at import (one holds a unix socket); Ray ends
                # the actor's process without running their finalizers, so they would pile up in
                # /tmp. They go in one directory per sweep, removed when this process exits (after
                # Ray's shutdown: the logging actors' own exit still talks over that socket). Not in
                # the run dir: a socket there breaks copying the run, and a deep run dir would pass
                # the 108-byte limit on a socket's path.
                tmp = tempfile.mkdtemp(prefix=wandb_tmp_prefix(run_dir))
                (Path(tmp) / OWNER).write_text(str(os.getpid()))
                atexit.register(shutil.rmtree, tmp, True)
                self._remote_logger_class = ray.remote(num_cpus=0, **_force_on_current_node(), max_restarts=-1,
                                                       max_task_retries=-1,
                                                       runtime_env={"env_vars": {"TMPDIR": str(tmp)}})(
                    self._logger_actor_cls)
            super()._start_logging_actor(trial, exclude_results, **kwargs)

        def on_experiment_end(self, trials, **info):
            """Trials the experiment ended without a ``log_trial_end`` (a ``stop_all`` after a
            permanent error) would keep their logging actors waiting for more results, and Ray's
            callback would wait ``upload_timeout`` (30 min) for them: end their runs first."""
            for trial in list(self._trial_queues):
                self._signal_logging_actor_stop(trial=trial)
            super().on_experiment_end(trials, **info)

    return [KeylessWandbLoggerCallback(project=cfg.sweep.wandb_project, group=f"seed{cfg.seed}", log_config=True,
                                save_checkpoints=False, mode=os.environ.get("WANDB_MODE", "offline"),
                                upload_timeout=300,
                                dir=str((run_dir / "wandb").resolve()), settings=wandb.Settings(silent=True))]
