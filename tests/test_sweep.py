"""The Tune sweep: gold-only scheduling (config validation and the stopper), the frontier map on
the smoke sweep, killing the sweep driver and restoring it, and a failing trial retried from its
checkpoint -- real Ray Tune on the smoke profile's real models."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from orchestrator.config.schema import ConfigError, FrontierConfig, load
from orchestrator.run.sweep import GoldStopper
from orchestrator.run.wandb_logging import wandb_tmp_prefix

ROOT = Path(__file__).resolve().parents[1]
SMOKE = "jobs/configs/smoke.yaml"


@pytest.mark.parametrize("key", ["sweep.stopper.metric=proxy/objective", "sweep.select_by=proxy/mean",
                                 "sweep.stopper.metric=eval/proxy"])
def test_proxy_keyed_stopper_or_selection_refused(key):
    with pytest.raises(ConfigError, match=key.split("=")[0].replace(".", r"\.")):
        load(FrontierConfig, SMOKE, [key])
    r = subprocess.run([sys.executable, "-m", "jobs.sweep", "--list", key], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "never on the proxy" in r.stderr, r.stderr


def test_gold_stopper_waits_for_patience_below_peak():
    st = GoldStopper(margin=0.05, patience=2)
    seq = [(0, 0.10), (5, 0.20), (5, 0.20), (10, 0.16), (15, 0.14), (20, 0.13)]
    decisions = [st("t", {"eval/step": s, "eval/gold": g}) for s, g in seq]
    # 0.16 is within the margin of the 0.20 peak; 0.14 and 0.13 are below it twice in a row
    assert decisions == [False, False, False, False, False, True]
    assert not st("u", {"eval/step": 0, "proxy/objective": 9.0})  # no gold, no decision
    st2 = GoldStopper(margin=0.05, patience=2)
    assert [st2("t", {"eval/step": s, "eval/gold": g}) for s, g in [(0, .2), (5, .1), (10, .3), (15, .2)]] == \
        [False, False, False, False]  # a recovery resets the count
    with pytest.raises(ValueError, match="only gold"):
        GoldStopper(0.05, 2, metric="proxy/objective")


# --------------------------------------------------------------------------------------------


# what a user's shell does not have: the variables the test harness sets, and per-user caches
HARNESS_ONLY = ("WANDB_MODE", "HF_HUB_OFFLINE", "RAY_ADDRESS", "RAY_USAGE_STATS_ENABLED", "DS_ACCELERATOR",
                "TOKENIZERS_PARALLELISM", "WANDB_API_KEY", "HF_HOME", "XDG_CACHE_HOME", "RLHF_FRONTIER_CACHE")


def user_env(home: Path, **extra: str) -> dict:
    """A user's environment: none of the harness's variables, a fresh HOME (so fresh caches)."""
    home.mkdir(parents=True, exist_ok=True)
    return {**{k: v for k, v in os.environ.items() if k not in HARNESS_ONLY}, "HOME": str(home), **extra}


def _job(*args: str, env: dict | None = None, cwd: Path = ROOT, user: Path | None = None,
         job: str = "jobs.sweep") -> subprocess.Popen:
    """``python -m jobs.sweep ARGS``: in the test environment, or, with ``user`` (a fresh HOME), in
    a user's environment (``user_env``)."""
    base = user_env(user) if user is not None else {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
                                                     "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.Popen([sys.executable, "-m", job, *args], cwd=cwd, env={**base, **(env or {})}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _seed_stages(smoke_dir: Path, d: Path, overrides: list[str]) -> None:
    """A run dir holding the smoke run's finished stages (the sweep must not redo them)."""
    from orchestrator.run.cli import save_config

    d.mkdir(parents=True)
    shutil.copytree(smoke_dir / "stages", d / "stages")
    save_config(load(FrontierConfig, SMOKE, overrides), d)


@pytest.mark.slow
def test_smoke_sweep_map_and_report(smoke_run):
    """The smoke job's sweep: every (size, beta) cell and the ensemble ran as Tune trials with
    per-step results, the frontier map is in frontier.json and the report embeds its plots."""
    cfg, run_dir, frontier = smoke_run
    rl = [e for e in frontier["rl"] if e["labels"] == "gold"]  # (not the monitor's disjoint-labels run)
    assert {(e["members"][0], e["kl_coef"]) for e in rl if len(e["members"]) == 1} == {
        (f"proxy-{s}", k) for s in cfg.rl.sizes for k in cfg.sweep.kl_coefs}
    assert any(len(e["members"]) == len(cfg.proxy.sizes) for e in rl)
    sw = frontier["checks"]["sweep"]
    assert set(sw["penalty"]) == {f"proxy-{s}@{k:g}" for s in cfg.rl.sizes for k in cfg.sweep.kl_coefs if k}
    html = (run_dir / "report.html").read_text()
    for name in ("sweep_cells.png", "sweep_heatmap.png", "sweep_penalty.png"):
        assert (run_dir / name).stat().st_size > 1000 and f'alt="{name}"' in html
    # Tune's own per-trial results: one row per step (and the final evaluation) for every trial
    trials = [p for p in (run_dir / "tune" / "sweep").iterdir() if p.is_dir() and (p / "result.json").exists()]
    assert len(trials) == len(frontier["rl"])
    for t in trials:
        rows = [json.loads(x) for x in (t / "result.json").read_text().splitlines()]
        assert len(rows) == cfg.rl.steps + 1 and "eval/gold" in rows[-1] and "kl" in rows[0]
        assert list(t.glob("events.out.tfevents*"))  # TensorBoard
    # the best checkpoint of every trial, selected by gold, holds a complete RL checkpoint
    from ray.tune import ExperimentAnalysis

    ea = ExperimentAnalysis(str(run_dir / "tune" / "sweep"))
    for t in ea.trials:
        best = ea.get_best_checkpoint(t, metric="eval/gold", mode="max")
        assert best is not None and (Path(best.path) / "manifest.json").is_file()
    assert not (run_dir / "wandb").exists()  # sweep.wandb: false (wandb's drill: the kill-and-resume test)


def _cut_trial_with_tune_checkpoint(d: Path) -> Path | None:
    """An unfinished trial's directory whose Tune trial already holds a checkpoint."""
    for t in d.glob("tune/sweep/rl_trial*"):
        if not list(t.glob("checkpoint_*")) or not (t / "result.json").is_file():
            continue
        try:
            name = json.loads((t / "result.json").read_text().splitlines()[0])["trial_name"]
        except (IndexError, KeyError, json.JSONDecodeError):
            continue
        for x in d.glob(f"rl/{name}-*"):
            if not (x / "DONE.json").exists() and x.name.rsplit("-", 1)[0] == name:
                return x
    return None


def _state_knows_checkpoint(d: Path, cut: Path) -> bool:
    """Tune's experiment state (snapshotted every 2 s) records a checkpoint of the cut trial, so a
    restore hands it over. A fixed wait after the checkpoint's directory appeared was too short on
    a loaded machine: Tune's controller registers a checkpoint after the trial wrote it."""
    states = sorted(d.glob("tune/sweep/experiment_state-*.json"))  # named by the run's start
    if not states:
        return False
    try:
        trials = json.loads(states[-1].read_text())["trial_data"]
    except (json.JSONDecodeError, KeyError, OSError):  # caught mid-write
        return False
    name = cut.name.rsplit("-", 1)[0]
    for t in d.glob("tune/sweep/rl_trial*"):
        rows = (t / "result.json").read_text().splitlines() if (t / "result.json").is_file() else []
        if rows and json.loads(rows[0]).get("trial_name") == name:
            return any(json.loads(meta)["relative_logdir"] == t.name and "checkpoint_0000" in run
                       for meta, run in trials)
    return False


@pytest.mark.slow
def test_kill_sweep_driver_then_resume(smoke_run, tmp_path):
    """SIGKILL the sweep driver (started with a relative ``--run-dir`` from another working
    directory, wandb on) once one trial finished and
    another checkpointed; ``--resume RUN_DIR`` (relative, in a user's environment, wandb on) restores
    the Tune experiment: the finished trial is
    not run again, the cut one continues from its checkpoint, and every trial ends with the
    uninterrupted results -- final weights, metric history and evaluations (the RL-loop issue's
    SIGKILL test and the sweep issue's restore test in one)."""
    _, smoke_dir, _ = smoke_run
    d = tmp_path / "run"
    # the smoke profile logs no wandb; this drill restores wandb's callback. The sweep's beta-0
    # cells (the single proxy and the ensemble): two trials, not three
    wandb = ["sweep.wandb=true", "sweep.kl_coefs=[0.0]", "monitor.disjoint_size="]
    _seed_stages(smoke_dir, d, wandb)
    # the ensemble trial is slowed (wall time only) so that the single-proxy trial finishes while it
    # is still running with a checkpoint: without it both end within a second of each other. The
    # job runs from a temporary working directory with a relative --run-dir (its trials run in Tune's
    # own working directories: every path they get must be absolute)
    p = _job("--config", str(ROOT / SMOKE), "--run-dir", d.name, "--quiet", *wandb, cwd=d.parent,
             env={"RLHF_FRONTIER_SLOW_TRIAL": "ensemble-wco:1.5"})
    deadline, done_first, cut = time.time() + 900, None, None
    while time.time() < deadline and p.poll() is None:
        done = list(d.glob("rl/*/DONE.json"))
        cut = _cut_trial_with_tune_checkpoint(d)
        if done and cut and _state_knows_checkpoint(d, cut):
            if (cut / "DONE.json").exists():
                continue
            done_first = {x: x.stat().st_mtime_ns for x in d.glob("rl/*/DONE.json")}
            break
        time.sleep(0.2)
    assert p.poll() is None and done_first, p.communicate()[1][-3000:]
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    # the cut trial loses its own checkpoints (as if it ran on a lost node): Tune's copy must do
    shutil.rmtree(cut / "checkpoints")
    # resumed as the README says, by a user: a relative run directory, from its parent, in a shell
    # with none of the test harness's variables (no WANDB_MODE: the restored wandb callback must
    # still run offline) and a fresh HOME
    # wandb's temporary directories (wandb never cleans them: Ray ends the logging actors'
    # processes) go in one directory per sweep under the system's temp dir; the SIGKILLed job's
    # stays behind (no exit handler runs on SIGKILL) until the next job on this run dir starts
    killed_tmp = set(Path(tempfile.gettempdir()).glob(wandb_tmp_prefix(d) + "*"))
    assert killed_tmp and all(list(t.glob("*wandb-media")) for t in killed_tmp), killed_tmp
    r = _job("--resume", d.name, "--quiet", cwd=d.parent, user=tmp_path / "home")
    _, err = r.communicate(timeout=900)
    assert r.returncode == 0, err[-3000:]
    assert "restoring the Tune experiment" in err, err[-3000:]
    assert "ValueError when calling" not in err, err[-3000:]
    assert re.search(r"resumed from \S*step_0", err), err[-3000:]
    assert f"{cut.name.rsplit('-', 1)[0]}: checkpoint step" in err, err[-3000:]
    for x, mtime in done_first.items():
        assert x.stat().st_mtime_ns == mtime, f"{x.parent.name} ran again"
    # the RL runs killed with SIGKILL mid-way end exactly as uninterrupted ones: weights, metric
    # histories, evaluations
    refs = [x for x in smoke_dir.glob("rl/*-*") if x.name.startswith(("ensemble-wco-", "proxy-1x8-kl0-"))]
    assert len(refs) == 2 and sorted(x.name for x in (d / "rl").iterdir()) == sorted(x.name for x in refs)
    for ref in refs:
        got = d / "rl" / ref.name
        assert json.loads((got / "DONE.json").read_text())["points"] == \
            json.loads((ref / "DONE.json").read_text())["points"], ref.name
        assert _sha(_learner_file(got)) == _sha(_learner_file(ref)), ref.name
        assert _history(got) == _history(ref), ref.name
    # wandb logged every trial, offline by default (the user's shell has no WANDB_MODE)
    assert list((d / "wandb").rglob("offline-run-*"))
    # the resumed job removed the killed job's wandb directory as it started and its own as it
    # exited. Nothing but files and directories in the run dir (a socket there broke copying it).
    # (A resume of a finished run is refused with exit 2: tests/test_ray_jobs.py.)
    assert not list(Path(tempfile.gettempdir()).glob(wandb_tmp_prefix(d) + "*"))
    odd = [x for x in d.rglob("*") if not (x.is_file() or x.is_dir())]
    assert not odd, odd


def _learner_file(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("step_*[0-9]"))[-1] / "learner.safetensors"


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _history(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in m.items() if not k.startswith(("timing/", "throughput/"))} for m in rows]


@pytest.mark.slow
def test_seed_ensemble_members_and_check(smoke_run, tmp_path):
    """``proxy.seed_members``: extra proxies of one size that differ only in seed, a seed ensemble per
    objective in the sweep, and its check against the single proxy of that size -- while every
    existing stage and trial stays cached and the existing results stay what they were."""
    import torch
    from safetensors.torch import load_file

    from orchestrator.run.pipeline import run_frontier

    cfg0, run_dir, base = smoke_run
    d = tmp_path / "run"
    d.mkdir()
    for sub in ("stages", "rl"):
        shutil.copytree(run_dir / sub, d / sub)
    M = 1  # one extra member (a seed ensemble of two): each more is another proxy process, same code path
    cfg = load(FrontierConfig, SMOKE, [f"proxy.seed_members={M}"])
    z = cfg.proxy.seed_size
    assert z == "1x8"  # the smallest of the smoke sizes
    fr = run_frontier(cfg, d, progress=False)
    t = fr["timings"]
    assert all(t[f"proxy-{s}"]["cached"] for s in cfg.proxy.sizes)  # keys unchanged
    assert [t[f"proxy-{z}-m{i}"]["cached"] for i in range(1, M + 1)] == [False] * M
    # best-of-n: every earlier curve as it was; the members' own and the seed ensembles' added (issue 20)
    old, new = {e["proxy"]: e for e in base["bon"]}, {e["proxy"]: e for e in fr["bon"]}
    assert all(new[n] == e for n, e in old.items())
    assert set(new) - set(old) == {*(f"proxy-{z}-m{i}" for i in range(1, M + 1)),
                                   *(f"ensemble-seeds-{o}" for o in ("mean", "wco", "uwo"))}
    # the members: trained from the same LM on the same labels, with their own seeds
    metas = {p: json.loads((p / "DONE.json").read_text()) for p in (d / "stages").glob("proxy-*")
             if (p / "DONE.json").is_file()}
    by_name = {m.get("name", f"proxy-{m['size']}"): (p, m) for p, m in metas.items()}
    for i in range(1, M + 1):
        p, m = by_name[f"proxy-{z}-m{i}"]
        base_inputs = by_name[f"proxy-{z}"][1]["inputs"]
        assert m["member"] == i and {**m["inputs"], "member": None} == {**base_inputs, "member": None}
    w = [load_file(str(by_name[n][0] / "model" / "model.safetensors")) for n in (f"proxy-{z}", f"proxy-{z}-m1")]
    assert w[0].keys() == w[1].keys() and any(not torch.equal(w[0][k], w[1][k]) for k in w[0])
    seeds = [e for e in fr["rl"] if e.get("ensemble") == "seeds"]
    assert [e["trial"] for e in seeds] == [f"ensemble-seeds-{o}" for o in cfg.rl.ensemble_objectives]
    assert seeds[0]["members"] == [f"proxy-{z}"] + [f"proxy-{z}-m{i}" for i in range(1, M + 1)]
    # the members also judge the other runs (the monitor's "other seeds"): those runs' keys name their
    # monitors, so they ran again -- with the very same curves (the judges never touch training)
    # every other run and check is the same as without seed members
    strip = lambda rl: sorted((e["trial"], json.dumps(e["points"])) for e in rl)  # noqa: E731
    assert strip([e for e in fr["rl"] if e not in seeds]) == strip(base["rl"])
    rc, rc0 = fr["checks"]["rl"], base["checks"]["rl"]
    for k in ("gold_drop_at_kl", "gold_drop_single", "gold_drop_ensemble", "ensemble_loses_less", "kl_for_same_gold"):
        assert rc[k] == rc0[k], k
    se = rc["seed_ensemble"]
    single = [e for e in fr["rl"] if e["trial"] == f"proxy-{z}-kl0"][0]
    k = min(max(p["kl"] for p in e["points"]) for e in [single, *seeds])
    assert se["at_kl"] == pytest.approx(k) and se["members"] == M + 1
    assert rc["seed_ensemble_loses_less"] == (min(se["ensembles"].values()) < se["single"])
    from orchestrator.report.seeds import _rl_effects

    eff = _rl_effects(rc)["seed ensemble: gold lost at their common KL, one member - best ensemble"]
    assert (eff > 0) == rc["seed_ensemble_loses_less"]
    # the seed ensembles are RL runs like the others (proxy-rises and R² checks see them) and add a check
    keys = ("proxy_rises_every_run", "smallest_rises_then_falls", "rl_form_fits_better", "rl_spends_more_kl_than_bon",
            "ensemble_loses_less", "seed_ensemble_loses_less")
    assert rc["all_pass"] == all(rc[k] for k in keys)
    assert set(rc["proxy_spearman_with_kl"]) == {e["trial"] for e in fr["rl"] if e["kl_coef"] == 0
                                                 and e["labels"] == "gold"}  # the checks' runs: not the half run
    assert f"seed ensembles ({M + 1} proxies of size 1x8" in (d / "report.md").read_text()


@pytest.mark.parametrize("mode", ["nan", "raise"])
def test_member_drill_is_caught_naming_the_member(tmp_path, monkeypatch, mode):
    """``RLHF_FRONTIER_FAIL_MEMBER=...[:nan]``: the member raises, or gives a NaN score, once (per
    marker); the ensemble refuses either as a ``RewardMemberError`` naming the member, and the next
    call scores again. (In a sweep that error fails the trial and Tune retries it from its checkpoint:
    ``test_nan_member_and_killed_role_processes_retried_from_checkpoint``; a raise takes the same path.)"""
    from actors.reward_ensemble import RewardEnsemble, RewardMemberError

    marker = tmp_path / "fault"
    monkeypatch.setenv("RLHF_FRONTIER_FAIL_MEMBER", f"gold/oracle:2:{marker}" + (":nan" if mode == "nan" else ""))
    ens = RewardEnsemble("gold", [{"name": "oracle", "kind": "oracle"}], num_cpus=1)
    rows = {"prompt": ["what is 3 plus 4 ?"] * 2, "response": ["3 plus 4 is 7 .", "3 plus 4 is 9 ."],
            "family": ["arith"] * 2, "meta": ['{"a": 3, "b": 4}'] * 2}
    first = ens.score(rows).values
    why = (r"gave 1 non-finite score\(s\), first on row 1" if mode == "nan"
           else r"RuntimeError: fault drill: gold/oracle failed on scoring call 2")
    with pytest.raises(RewardMemberError, match=r"gold member 'oracle' failed: " + why):
        ens.score(rows)
    assert marker.read_text() == "2"
    assert (ens.score(rows).values == first).all()  # once per marker; the member scores as before


def _tune_error(d: Path, trial: str) -> str:
    """The error Tune recorded for ``trial`` (its first failure), or ''."""
    for t in d.glob("tune/sweep/rl_trial*"):
        rows = (t / "result.json").read_text().splitlines() if (t / "result.json").is_file() else []
        if rows and json.loads(rows[0]).get("trial_name") == trial:
            return (t / "error.txt").read_text() if (t / "error.txt").is_file() else ""
    return ""


@pytest.mark.slow
def test_nan_member_and_killed_role_processes_retried_from_checkpoint(smoke_run, tmp_path):
    """One sweep (the smoke sweep's beta-0 cells: the ensemble and a single proxy), three faults: a
    proxy member of the ensemble trial returns NaN (the step fails naming the member); in the
    single-proxy trial, the learner's and the proxy's processes are SIGKILLed after the same step
    (per-role actors: the smoke profile colocates, this drill does not). None of that state can be
    rebuilt in place: each trial fails once, Tune retries it from its last checkpoint, and every
    trial ends with the undisturbed (colocated) smoke sweep's results -- evaluations, metric
    history, final learner weights. This is also the suite's test that ``cluster.rl.colocate``
    moves no number: every step of these trials ran with one actor per role, and their weights,
    histories and evaluations equal the colocated references bit for bit. (Both faults of the
    single-proxy trial land in one attempt: a third attempt of a trial cost ~25 s of actor startup
    here, and each role's death is its own kill and its own ``ActorDiedError`` path.)"""
    cfg, smoke_dir, _ = smoke_run
    assert cfg.cluster.rl.colocate and cfg.sweep.max_failures >= 2
    # the learner and the ensembles are processes of their own; two trials, not three
    per_role = ["cluster.rl.colocate=false", "sweep.kl_coefs=[0.0]", "monitor.disjoint_size="]
    d = tmp_path / "run"
    _seed_stages(smoke_dir, d, per_role)
    nan, kill_learner, kill_proxy = tmp_path / "nan", tmp_path / "kill-learner", tmp_path / "kill-proxy"
    # the ensemble's proxy actor scores: eval 0, step 0, eval 1, step 1, eval 2, step 2 (its 6th call:
    # after checkpoint step 2); kills after step 3 find checkpoint step 4 (saved with step 3's update)
    r = _job("--config", SMOKE, "--run-dir", str(d), "--quiet", *per_role,
             env={"RLHF_FRONTIER_FAIL_MEMBER": f"proxy/proxy-2x32:6:{nan}:nan",
                  "RLHF_FRONTIER_KILL_ROLE": f"proxy-1x8-kl0:learner:3:{kill_learner},"
                                             f"proxy-1x8-kl0:proxy:3:{kill_proxy}"})
    _, err = r.communicate(timeout=1500)
    assert r.returncode == 0, err[-3000:]
    assert nan.read_text() == "6", "the member never returned NaN"
    assert kill_learner.read_text().startswith("learner pid ") and kill_proxy.read_text().startswith("proxy pid ")
    assert "proxy member 'proxy-2x32' failed: gave 1 non-finite score(s)" in err, err[-3000:]
    # trial processes that took a second trial flushed no handler into the first one's closed log file
    assert "ValueError when calling" not in err, err[-3000:]
    # Tune saw each trial fail, for the reasons drilled, and retried it from the checkpoint before the fault
    errors = {t: _tune_error(d, t) for t in ("ensemble-wco", "proxy-1x8-kl0")}
    assert "proxy member 'proxy-2x32' failed: gave 1 non-finite" in errors["ensemble-wco"]
    assert "ActorDiedError" in errors["proxy-1x8-kl0"] or "RayActorError" in errors["proxy-1x8-kl0"]
    assert re.search(r"class_name: (PolicyLearner|RewardEnsemble)", errors["proxy-1x8-kl0"]), errors["proxy-1x8-kl0"]
    for trial, e in errors.items():  # each trial failed once: no retry failed again
        assert "Failure # 1 " in e and "Failure # 2 " not in e, (trial, e[-2000:])
    for trial, step in (("ensemble-wco", 2), ("proxy-1x8-kl0", 4)):
        assert re.search(rf"rl {re.escape(trial)}: resumed from \S*/{re.escape(trial)}-\w+/checkpoints/"
                         rf"step_{step:06d}", err), (trial, step, err[-3000:])
    refs = [x for x in sorted(smoke_dir.glob("rl/*-*")) if x.name.startswith(("ensemble-wco-", "proxy-1x8-kl0-"))]
    assert len(refs) == 2 and sorted(x.name for x in (d / "rl").iterdir()) == [x.name for x in refs]
    for ref in refs:
        got = d / "rl" / ref.name
        done = json.loads((got / "DONE.json").read_text())
        assert done["points"] == json.loads((ref / "DONE.json").read_text())["points"], ref.name
        assert not done["stopped_early"] and done["steps"] == cfg.rl.steps
        assert _history(got) == _history(ref), ref.name  # no step recorded twice or lost, same numbers
        assert _sha(_learner_file(got)) == _sha(_learner_file(ref)), ref.name


@pytest.mark.slow
def test_gold_stopper_ends_a_real_trial_past_its_gold_peak(smoke_run, tmp_path):
    """``sweep.stopper.enabled``: a real Tune trial whose held-out gold falls ``margin`` below its
    running peak for ``patience`` evaluations in a row is stopped there, before ``rl.steps``; its
    DONE.json says ``stopped_early`` and holds the evaluations up to the stop. Checked against the
    trial's own evaluations: no earlier evaluation met the rule. (On the smoke profile gold does not
    move in 6 steps, and its 8 evaluation samples sit at the oracle's floor: their gold stays flat
    even at KL 8. A 30x learning rate, an evaluation every step on 64 prompts x 2 responses makes
    it fall -- by 0.07 at KL ~6.6, around step 8, on this machine.)"""
    from orchestrator.run.pipeline import run_frontier

    _, smoke_dir, _ = smoke_run
    margin, patience, steps = 0.03, 2, 24
    ov = ["rl.lr=0.01", "rl.eval_every=1", f"rl.steps={steps}", "rl.ensemble_objectives=[]", "sweep.kl_coefs=[0.0]",
          "monitor.disjoint_size=",
          "rl.eval_prompts=64", "rl.eval_responses_per_prompt=2",
          "sweep.stopper.enabled=true", f"sweep.stopper.margin={margin}", f"sweep.stopper.patience={patience}"]
    d = tmp_path / "run"
    _seed_stages(smoke_dir, d, ov)
    fr = run_frontier(load(FrontierConfig, SMOKE, ov), d, progress=False)
    assert [e["trial"] for e in fr["rl"]] == ["proxy-1x8-kl0"]
    (run,) = d.glob("rl/proxy-1x8-kl0-*")
    done = json.loads((run / "DONE.json").read_text())
    assert done["stopped_early"] is True and fr["rl"][0]["stopped_early"] is True
    # the trial's own record: metrics.jsonl rows and the evaluations (one per step, before the step)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in rows] == list(range(done["steps"]))
    assert done["steps"] < steps, "the trial ran to the end"
    gold = [p["gold"] for p in done["points"]]
    assert [p["step"] for p in done["points"]] == list(range(done["steps"]))
    below, peak, stop_at = 0, float("-inf"), None
    for i, g in enumerate(gold):
        peak = max(peak, g)
        below = below + 1 if g < peak - margin else 0
        if below >= patience:
            stop_at = i
            break
    # stopped at the first evaluation meeting the rule (after that step's update), not before, not later
    assert stop_at == len(gold) - 1, (gold, stop_at)
    assert max(gold[: stop_at - patience + 1]) - max(gold[stop_at - patience + 1:]) > margin  # a real fall
    # the evaluations the stopper saw: Tune's own per-step results of the trial
    (tdir,) = [t for t in d.glob("tune/sweep/rl_trial*") if (t / "result.json").is_file()]
    res = [json.loads(x) for x in (tdir / "result.json").read_text().splitlines()]
    ev = {r["eval/step"]: r["eval/gold"] for r in res if "eval/gold" in r}
    assert sorted(ev) == list(range(done["steps"]))
    assert [ev[s] - ev[0] for s in sorted(ev)] == pytest.approx(gold, abs=1e-12)
    assert res[-1]["step"] == done["steps"] - 1 and "eval/gold" in res[-1]  # the last report stopped it


def test_handlers_made_inside_a_trial_leave_its_tee_when_it_ends(monkeypatch):
    """Tune tees a trial's ``sys.stderr`` into its log file and closes the tee when the process
    takes the next trial. Handlers made inside the trial (torch's, transformers' -- whose flush is
    pinned to the stream's) are pointed back at the process's own stderr by ``unbind_trial_streams``,
    so no flush at the process's exit hits a closed file."""
    import io
    import logging

    from orchestrator.run.cli import unbind_trial_streams

    tee = io.StringIO()
    monkeypatch.setattr(sys, "stderr", tee)
    bound = logging.StreamHandler()  # made inside the trial: takes the tee
    pinned = logging.StreamHandler()
    pinned.flush = sys.stderr.flush  # as transformers' default handler does
    loose = logging.StreamHandler()  # held by no logger (logging flushes it at exit all the same)
    other = logging.StreamHandler(io.StringIO())  # some other stream: left alone
    lg = logging.getLogger("test-trial-tee")
    for h in (bound, pinned, other):
        lg.addHandler(h)
    try:
        assert unbind_trial_streams() >= 4
        assert bound.stream is sys.__stderr__ and pinned.stream is sys.__stderr__ and loose.stream is sys.__stderr__
        assert pinned.flush == sys.__stderr__.flush and other.stream is not sys.__stderr__
        tee.close()  # what Tune does at the trial's end: nothing still writes there
        for h in (bound, pinned, loose, other):
            h.flush()
    finally:
        for h in (bound, pinned, other):
            lg.removeHandler(h)


def test_stale_wandb_tmp_dirs_of_dead_jobs_are_cleared(tmp_path):
    """A SIGKILLed job leaves its wandb temporary directory behind; the next job on the same run
    dir removes it -- only when its owner process is gone, never a running job's or a stranger's."""
    from orchestrator.run.wandb_logging import OWNER, clear_stale_tmp

    run = tmp_path / "run"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    made = {}
    for name, pid in (("dead", dead.pid), ("alive", os.getpid()), ("unowned", None)):
        made[name] = Path(tempfile.mkdtemp(prefix=wandb_tmp_prefix(run)))
        if pid is not None:
            (made[name] / OWNER).write_text(str(pid))
    other = Path(tempfile.mkdtemp(prefix=wandb_tmp_prefix(tmp_path / "another-run")))
    (other / OWNER).write_text(str(dead.pid))
    try:
        assert clear_stale_tmp(run) == [made["dead"]]
        assert not made["dead"].exists() and made["alive"].is_dir() and made["unowned"].is_dir() and other.is_dir()
    finally:
        for p in (*made.values(), other):
            shutil.rmtree(p, ignore_errors=True)


def test_sweep_progress_counts_a_trials_final_evaluation_as_no_extra_step():
    """A trial reports steps 0..steps-1 and then its final evaluation at ``step == steps``: the
    progress line says ``6/6``, never ``7/6``, and the bar never passes its total."""
    from types import SimpleNamespace

    from orchestrator.run.sweep import SweepProgress

    p = SweepProgress(trials=2, steps=6, bar=False)
    t = SimpleNamespace(trial_id="t0")
    for step in range(7):  # 0..5, then the final evaluation's report at step 6
        p.on_trial_result(0, [], t, {"trial_name": "proxy-1x8-kl0", "step": step})
    assert p.step == {"t0": 6}
    p.on_step_end(0, [])
    assert p._p.done == 6 and "proxy-1x8-kl0 6/6" in p._p.detail
