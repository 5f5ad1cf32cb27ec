"""The Tune controller: the RL sweep of KL coefficient x proxy size x seed (x ensemble objective)
that turns single RL runs into the frontier map (DESIGN.md data flow, step 7; Gao et al. 2022,
section 3: RL against every proxy size with and without a KL penalty).

One Tune trial is one RL run (``orchestrator.run.rl_loop``). Its placement-group bundles cover every
role (``cluster.rl``): one bundle with all of them when ``cluster.rl.colocate`` (the trial's own
process hosts the roles), otherwise an empty head bundle for the trial plus one per role actor.
Trials report every step (TensorBoard / CSV / JSON through Tune's loggers, wandb offline by
default), checkpoint with the RL loop's own checksummed checkpoints, and write their summary to
``RUN/rl/<trial>-<key>/DONE.json``: a finished trial is never run again, by Tune's restore or by a
rerun of the job. Scheduling decisions look at gold only (``GoldStopper``); config validation
refuses a stopper or a checkpoint selection keyed to the proxy (``SweepConfig``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import ray
from ray.tune import Callback
from ray.tune.stopper import Stopper

from orchestrator.config.schema import ConfigError, FrontierConfig
from orchestrator.run.stages import StageResult
from orchestrator.run.trials import grid, trial_dir, trial_specs  # noqa: F401  (re-exported)
from orchestrator.run.wandb_logging import clear_stale_tmp, wandb_callbacks

log = logging.getLogger("rlhf_frontier")

GOLD_METRIC = "eval/gold"  # the held-out gold of the latest evaluation: what stoppers and selection see


def trial_resources(cfg: FrontierConfig):
    """The trial's ``PlacementGroupFactory``: all roles in one bundle when colocated, else a head
    bundle for the trial (it only waits) plus one bundle per role actor (``Slot`` fills them)."""
    from ray.tune import PlacementGroupFactory

    r = cfg.cluster.rl
    if r.colocate:
        return PlacementGroupFactory(r.bundles(), strategy="STRICT_PACK")
    return PlacementGroupFactory([{}, *r.bundles()], strategy=r.strategy)  # {}: the trial itself only waits


# --------------------------------------------------------------------------------------------
# scheduling on gold


class GoldStopper(Stopper):
    """Ends a trial once its held-out gold has stayed more than ``margin`` below its running peak
    for ``patience`` consecutive evaluations: the run is past its peak, the rest is overoptimization
    we have already measured. Keyed to gold by construction (``GOLD_METRIC``); a proxy-keyed stopper
    is refused by config validation, since selecting on the proxy is exactly what overoptimizes."""

    def __init__(self, margin: float, patience: int, metric: str = GOLD_METRIC):
        if not metric.startswith("eval/gold"):
            raise ValueError(f"stopper metric {metric!r}: only gold may stop a trial")
        self.margin, self.patience, self.metric = margin, patience, metric
        self._state: dict[str, tuple[float, int, int]] = {}  # trial -> (peak, evals below, last eval step)

    def __call__(self, trial_id: str, result: dict) -> bool:
        if self.metric not in result or result.get("eval/step") is None:
            return False
        peak, below, last = self._state.get(trial_id, (float("-inf"), 0, -1))
        if result["eval/step"] == last:  # the same evaluation reported again with later steps
            return below >= self.patience
        g = float(result[self.metric])
        peak = max(peak, g)
        below = below + 1 if g < peak - self.margin else 0
        self._state[trial_id] = (peak, below, result["eval/step"])
        return below >= self.patience

    def stop_all(self) -> bool:
        return False


class MonitorStopper(Stopper):
    """Ends a trial at its gold-free alarm: the detector's signal (``eval/monitor/<name>``, computed
    by the trial at each evaluation without gold) beyond its rule's threshold for ``patience``
    evaluations in a row (``orchestrator.math.monitor.first_alarm``'s rule, applied live)."""

    def __init__(self, detector: str, rule):
        from orchestrator.math.monitor import as_rule

        self.key, self.rule = f"eval/monitor/{detector}", as_rule(rule)
        self._state: dict[str, tuple[int, int]] = {}  # trial -> (evaluations in a row beyond, last eval step)

    def __call__(self, trial_id: str, result: dict) -> bool:
        if self.key not in result or result.get("eval/step") is None:
            return False
        run, last = self._state.get(trial_id, (0, -1))
        if result["eval/step"] == last:
            return run >= self.rule.patience
        v = float(result[self.key])
        hit = (v > self.rule.threshold) if self.rule.direction == "above" else (v < self.rule.threshold)
        run = run + 1 if (v == v and hit) else 0
        self._state[trial_id] = (run, result["eval/step"])
        return run >= self.rule.patience

    def stop_all(self) -> bool:
        return False


FATAL_METRIC = "fatal_error"  # a trial reports it once when it hit an error no retry can fix


def is_permanent(exc: BaseException) -> bool:
    """An error that a retry of the trial cannot fix: a config or data error raised inside the
    trial (a refused checkpoint of another reference policy is one), a missing or unreadable
    file, a missing package, a broken information barrier, a model path that is not a model.
    A killed process, a lost node or a reward member that raised are not: Tune retries those."""
    from orchestrator.data.batch import BarrierError
    from orchestrator.data.tables import DataError

    if isinstance(exc, (ConfigError, DataError, BarrierError, ImportError, FileNotFoundError, NotADirectoryError,
                        IsADirectoryError, PermissionError)):
        return True
    msg = str(exc)
    # transformers' from_pretrained on a path that is no model directory (or not absolute inside a trial)
    return type(exc) is OSError and any(s in msg for s in ("Repo id must be", "does not appear to have a file",
                                                           "Can't load", "is not a valid model identifier"))


class FatalStopper(Stopper):
    """Ends the whole experiment as soon as a trial reports a permanent error (``is_permanent``):
    every other trial would hit it too, and retrying cannot help. Chained with the gold stopper."""

    def __init__(self, inner: Stopper | None = None):
        self.inner, self._fatal = inner, False

    def __call__(self, trial_id: str, result: dict) -> bool:
        if result.get(FATAL_METRIC):
            self._fatal = True
            return True
        return bool(self.inner(trial_id, result)) if self.inner is not None else False

    def stop_all(self) -> bool:
        return self._fatal

    def __getstate__(self):  # a restored experiment starts without the fatal flag (the cause was fixed)
        return {"inner": self.inner, "_fatal": False}


def _stopper(cfg: FrontierConfig) -> FatalStopper:
    st = cfg.sweep.stopper
    if not st.enabled:
        return FatalStopper(None)
    if st.metric.startswith("monitor/"):
        name = st.metric.split("/", 1)[1]
        return FatalStopper(MonitorStopper(name, cfg.monitor.rules()[name]))
    return FatalStopper(GoldStopper(st.margin, st.patience, st.metric))


# --------------------------------------------------------------------------------------------
# the trial


def rl_trial(config: dict, ctx: dict) -> None:
    """One Tune trial = one RL run (function trainable). Restores from the trial directory's own
    checkpoints, or from Tune's checkpoint when the directory lacks it (another node); reports
    every step; attaches each checkpoint to the report of the evaluation of the same weights, so
    Tune's best-checkpoint selection by ``eval/gold`` picks real policies."""
    import ray.tune as tune

    from orchestrator.run.cli import setup_logging, unbind_trial_streams

    setup_logging(process_stderr=True)  # this process's INFO lines reach the driver (Ray forwards its stderr)
    for name in ("ray.train", "ray.tune"):  # not a line per checkpoint: the sweep's progress says enough
        logging.getLogger(name).setLevel(logging.WARNING)

    spec = ctx["specs"][config["trial"]]
    out = Path(ctx["dirs"][config["trial"]])
    (out / "FATAL.json").unlink(missing_ok=True)
    try:
        _rl_trial(spec, out, ctx)
    except Exception as e:  # noqa: BLE001  (classified: permanent errors end the sweep, others are retried)
        if not is_permanent(e):
            raise
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "FATAL.json", {"trial": spec.name, "type": type(e).__name__, "message": str(e)})
        log.error("rl %s: %s: %s (no retry can fix this: ending the sweep)", spec.name, type(e).__name__, e)
        tune.report({FATAL_METRIC: 1, "trial_name": spec.name})
    finally:
        unbind_trial_streams()  # handlers made in this trial must not write into its closed log file


def _rl_trial(spec, out: Path, ctx: dict) -> None:
    import ray.tune as tune

    from orchestrator.nn.models import set_threads
    from orchestrator.run.rl_loop import RLRun, run_rl, summarize
    from orchestrator.run.slots import Slot

    done = out / "DONE.json"
    cfg_rl, res = ctx["rl"], ctx["resources"]
    if done.is_file():  # finished before (a rerun of the job, or a restored sweep)
        s = json.loads(done.read_text())
        tune.report({"done_before": 1, "step": s["steps"], **_final(s)})
        return
    ck = tune.get_checkpoint()
    if ck is not None:  # Tune's copy of our checkpoint: the trial dir may lack it (another node, lost disk)
        with ck.as_directory() as d:
            step = json.loads((Path(d) / "state.json").read_text())["step"]
            target = out / "checkpoints" / f"step_{step:06d}"
            if not target.exists():
                tmp = target.with_name(target.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                # our files only (what the manifest lists): anything Tune or a third party added stays out
                for f in ["manifest.json", *json.loads((Path(d) / "manifest.json").read_text())]:
                    if "/" not in f and f not in (".", "..") and (Path(d) / f).is_file():
                        shutil.copy2(Path(d) / f, tmp / f)  # verify_checkpoint judges the rest
                tmp.replace(target)
                log.info("rl %s: checkpoint step %d taken from Tune's storage", spec.name, step)
    t0 = time.perf_counter()
    seed = spec.labels.get("seed", ctx["seed"])
    if res.colocate:
        set_threads(res.num_cpus)
        slot = Slot(res, ctx["policy"], ctx["tokenizer"], list(spec.members), seed, ctx.get("gold", True), local=True,
                    chat_template=ctx.get("template", "auto"), reward_app=ctx.get("reward_app", ""))
    else:
        pg = ray.util.get_current_placement_group()
        slot = Slot(res, ctx["policy"], ctx["tokenizer"], list(spec.members), seed, ctx.get("gold", True), pg=(pg, 0),
                    chat_template=ctx.get("template", "auto"),  # empty head: not in the group
                    reward_app=ctx.get("reward_app", ""))
    pending: list = []  # checkpoints waiting for the evaluation of their weights

    slow = os.environ.get("RLHF_FRONTIER_SLOW_TRIAL", "").rsplit(":", 1)  # "trial-name:seconds" per step:
    delay = float(slow[1]) if len(slow) == 2 and slow[0] == spec.name else 0.0  # tests widen a window
    kills = _kill_drills(spec.name)

    def on_step(m: dict, ev: dict | None, ckpt: Path | None) -> None:
        if delay:
            time.sleep(delay)  # wall time only: the run's numbers do not change
        if ckpt is not None:
            pending.append(ckpt)
        rep = {k: v for k, v in m.items() if isinstance(v, (int, float))}
        rep["trial_name"] = spec.name
        if ev is not None:
            rep.update({f"eval/{k}": v for k, v in ev.items() if isinstance(v, (int, float))})
        attach = None
        if ev is not None:  # a stopped trial ends without returning: its summary so far is on disk
            _write_json(out / "SUMMARY.json", summarize(run))
        if ev is not None and pending and int(pending[-1].name.split("_")[1]) == ev["step"]:
            attach = pending.pop()
            pending.clear()
        tune.report(rep, checkpoint=tune.Checkpoint.from_directory(str(attach)) if attach else None)
        for role, step, marker in kills:
            if m.get("step") == step and not os.path.exists(marker):
                _kill_role(spec.name, slot, role, step, marker)

    try:
        run = RLRun(cfg_rl, spec, res, ctx["policy"], ctx["tokenizer"], ctx["train_rows"], ctx["eval_rows"], out,
                    seed, slot=slot)
        summary = run_rl(run, tensorboard=True, on_step=on_step)
    finally:
        slot.shutdown()
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    summary["stopped_early"] = False
    _write_json(done, summary)


def _kill_drills(trial: str) -> list[tuple[str, int, str]]:
    """Fault drill (``RLHF_FRONTIER_KILL_ROLE=TRIAL:ROLE:STEP:MARKER[,...]``, set in the job's
    environment): (role, step, marker) of the kills aimed at this trial."""
    out = []
    for item in filter(None, os.environ.get("RLHF_FRONTIER_KILL_ROLE", "").split(",")):
        name, role, step, marker = item.split(":", 3)
        if name == trial:
            if role not in ("learner", "gen", "proxy", "gold"):
                raise ValueError(f"RLHF_FRONTIER_KILL_ROLE: role {role!r} must be learner, gen, proxy or gold")
            out.append((role, int(step), marker))
    return out


def _kill_role(trial: str, slot, role: str, step: int, marker: str) -> None:
    """SIGKILL the process of ``role``'s (first) actor once its step ``step`` is reported -- the
    process it says it is (``where()``), as the OOM killer or a crash would end it; once per
    ``marker`` file. With ``cluster.rl.colocate`` that is the trial's own process."""
    import signal

    from orchestrator.run.actor_group import fetch

    pid = fetch(getattr(slot, role).all("where"))[0]["pid"]  # (``one`` would move the round-robin)
    with open(marker, "w") as f:
        f.write(f"{role} pid {pid} after step {step}\n")
    log.warning("rl %s: fault drill: killing the %s's process (pid %d) after step %d", trial, role, pid, step)
    os.kill(pid, signal.SIGKILL)


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def _final(summary: dict) -> dict:
    p = summary["points"][-1] if summary.get("points") else {}
    return {"eval/kl": p.get("kl", 0.0), "eval/gold_rel": p.get("gold", 0.0), "eval/proxy_rel": p.get("proxy", 0.0)}


# --------------------------------------------------------------------------------------------
# the sweep


def stage_sweep(cfg: FrontierConfig, run_dir: Path, task: StageResult, sft: StageResult,
                proxies: list[StageResult], progress: bool, calibration: dict | None = None,
                learned: list[float] | None = None) -> list[dict]:
    """Run (or restore and finish) the sweep; returns every trial's summary (frontier.json "rl")."""
    from ray import tune

    from orchestrator.run.rl_stage import rl_rows
    from orchestrator.run.roles import gold_members, tokenizer_dir

    if cfg.sweep.wandb:
        # offline unless the user chose otherwise: set here, before a Tune experiment is built or
        # restored (a restored WandbLoggerCallback asks for an API key unless WANDB_MODE is offline)
        os.environ.setdefault("WANDB_MODE", "offline")
    clear_stale_tmp(run_dir)  # wandb's temporary files of an earlier job here that was SIGKILLed
    specs = trial_specs(cfg, proxies, calibration, learned)
    dirs = [trial_dir(cfg, run_dir, task, sft, s) for s in specs]
    todo = [i for i, d in enumerate(dirs) if not (d / "DONE.json").is_file()]
    for i in range(len(specs)):
        if i not in todo:
            log.info("rl %-22s cached  (%s)", specs[i].name, dirs[i].name)
    if todo:
        train_rows, eval_rows = rl_rows(cfg, task)
        ctx = {"specs": specs, "dirs": [str(d) for d in dirs], "rl": cfg.rl, "resources": cfg.cluster.rl,
               "policy": str(sft.dir / "policy"), "tokenizer": tokenizer_dir(task),
               "gold": gold_members(cfg) if cfg.gold.models else True, "template": cfg.task.dataset.chat_template,
               "train_rows": train_rows, "eval_rows": eval_rows, "seed": cfg.seed}
        if cfg.cluster.rl.reward_service == "serve":  # proxy and gold score on the reward service
            from orchestrator.run.service_client import deploy_for_rl

            ctx["reward_app"] = deploy_for_rl(cfg, run_dir, task, proxies, calibration)
        trainable = tune.with_resources(tune.with_parameters(rl_trial, ctx=ctx), trial_resources(cfg))
        # the experiment's state is tiny: snapshot it every 2 s (Tune's default starts at 10 s), so a
        # driver killed early still leaves a restorable experiment
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        storage = (run_dir / "tune").resolve()
        path = storage / "sweep"
        # the experiment's trials by index (its param space) and the trial directories they stood for:
        # a restore is only right when every unfinished trial is the one the experiment holds. When a
        # trial's key changed since (another version of a stage, a member scaled otherwise), Tune would
        # count the old trial finished and the new one would never run: set the experiment aside and
        # start a fresh one (every trial still continues from its own checkpoints).
        manifest = storage / "sweep.trials.json"
        if tune.Tuner.can_restore(str(path)):
            held = json.loads(manifest.read_text()) if manifest.is_file() else {}
            if not all(held.get(str(i)) == str(dirs[i]) for i in todo):
                aside = path.with_name(f"sweep.stale-{time.strftime('%Y%m%d-%H%M%S')}")
                path.rename(aside)
                log.info("sweep: the Tune experiment in %s holds other trials; set aside as %s", path, aside.name)
        if tune.Tuner.can_restore(str(path)):
            log.info("sweep: restoring the Tune experiment in %s", path)
            tuner = tune.Tuner.restore(str(path), trainable, resume_errored=True)
            SweepProgress.show_bar = progress  # the restored callback: this terminal decides
        else:
            storage.mkdir(parents=True, exist_ok=True)
            _write_json(manifest, {str(i): str(dirs[i]) for i in todo})
            tuner = tune.Tuner(
                trainable,
                param_space={"trial": tune.grid_search(todo)},
                # reuse_actors: a finished trial's process takes the next trial (no new process, no
                # second import of torch / transformers: ~4 s of CPU per trial on a small machine)
                tune_config=tune.TuneConfig(max_concurrent_trials=_concurrent(cfg, len(todo)), reuse_actors=True),
                run_config=tune.RunConfig(
                    name="sweep", storage_path=str(storage), stop=_stopper(cfg),
                    failure_config=tune.FailureConfig(max_failures=cfg.sweep.max_failures),
                    # every checkpoint is kept: with num_to_keep, a driver killed between Tune's state
                    # snapshot and its pruning leaves a restore pointing at a deleted checkpoint
                    checkpoint_config=tune.CheckpointConfig(checkpoint_score_attribute=cfg.sweep.select_by,
                                                            checkpoint_score_order="max"),
                    callbacks=[SweepProgress(len(todo), cfg.rl.steps, progress), *wandb_callbacks(cfg, run_dir)],
                    verbose=0,  # SweepProgress shows the sweep: a bar on a terminal, a log line every 30 s
                    log_to_file=True))
        try:
            grid = tuner.fit()
        finally:
            if ctx.get("reward_app"):
                from orchestrator.run.service_client import undeploy

                undeploy(ctx["reward_app"])
        fatal = [json.loads((d / "FATAL.json").read_text()) for d in dirs if (d / "FATAL.json").is_file()]
        if fatal:
            # set the stopped experiment aside: a rerun after the fix builds a fresh one, and every
            # trial continues from its own checkpoints (Tune would count the stopped ones finished)
            aside = path.with_name(f"sweep.stopped-{time.strftime('%Y%m%d-%H%M%S')}")
            path.rename(aside)
            f = fatal[0]
            raise ConfigError(f"sweep trial {f['trial']}: {f['type']}: {f['message']} (the sweep stopped at once: "
                              f"no retry can fix this; fix it and rerun, finished trials are kept)")
        errors = [r for r in grid if r.error is not None]
        if errors:
            raise RuntimeError(f"{len(errors)} sweep trial(s) failed after {cfg.sweep.max_failures} retries; "
                               f"first: {errors[0].error}")
        for d in dirs:  # trials the gold stopper ended: their last summary is their result
            if not (d / "DONE.json").is_file() and (d / "SUMMARY.json").is_file():
                summary = json.loads((d / "SUMMARY.json").read_text())
                summary["stopped_early"] = True
                _write_json(d / "DONE.json", summary)
                log.info("rl %-22s stopped on gold at step %d", d.name, summary["steps"])
    out = []
    for s, d in zip(specs, dirs):
        summary = json.loads((d / "DONE.json").read_text())
        if todo and specs.index(s) in todo:
            ev = summary["points"][-1]
            log.info("rl %-22s %s in %s s: %d steps, final kl %.2f, proxy %+.3f, gold %+.3f", s.name,
                     "stopped on gold" if summary.get("stopped_early") else "done", summary.get("seconds"),
                     summary["steps"], ev["kl"], ev["proxy"], ev["gold"])
        summary.update(s.labels)
        summary["trial"] = s.name
        summary["cached"] = specs.index(s) not in todo
        if len(s.members) == 1:  # the contract's "proxy" names the reward model, the trial its cell
            summary["proxy"] = s.members[0]["name"]
        out.append(summary)
    return out


class SweepProgress(Callback):
    """The sweep's progress: RL steps done over all trials (a bar on a terminal) and, at least
    every 30 s, a log line with the trials finished, running (and their steps) and pending."""

    show_bar: bool | None = None  # set on restore: the restoring terminal decides, not the pickled state

    def __init__(self, trials: int, steps: int, bar: bool):
        self.trials, self.steps, self.bar = trials, steps, bar
        self.step: dict[str, int] = {}
        self.names: dict[str, str] = {}
        self.finished: set[str] = set()
        self._p = None

    def __getstate__(self):  # Tune snapshots its callbacks with the experiment: no terminal handles
        return {**self.__dict__, "_p": None}

    def _progress(self):
        if self._p is None:
            from orchestrator.run.progress import Progress

            bar = self.bar if SweepProgress.show_bar is None else SweepProgress.show_bar
            self._p = Progress("sweep", self.trials * self.steps, bar, unit="step")
        return self._p

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.names[trial.trial_id] = result.get("trial_name", trial.trial_id)
        if result.get("done_before"):
            self.step[trial.trial_id] = self.steps
        elif "step" in result:  # the final evaluation reports step == steps: not a step more
            self.step[trial.trial_id] = min(int(result["step"]) + 1, self.steps)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.finished.add(trial.trial_id)
        self.step[trial.trial_id] = self.steps

    def on_step_end(self, iteration, trials, **info):
        p = self._progress()
        running = [f"{self.names.get(t, t)} {s}/{self.steps}" for t, s in self.step.items()
                   if t not in self.finished]
        p.set(min(sum(self.step.values()), p.total),
              f"{len(self.finished)}/{self.trials} trials done" + (f"; running {', '.join(running)}" if running else ""))

    def on_experiment_end(self, trials, **info):
        if self._p is not None:
            self._p.close()


def _concurrent(cfg: FrontierConfig, n: int) -> int:
    if cfg.cluster.rl.max_concurrent:
        return min(n, cfg.cluster.rl.max_concurrent)
    cpus = ray.cluster_resources().get("CPU", 1.0)
    return max(1, min(n, int(cpus // cfg.cluster.rl.num_cpus)))
