"""The newcomer's path: the main job run as a user types it -- from another working directory, with
the default (relative) run directory, in a shell without the test harness's variables and with a
fresh HOME -- first ended at once by an error no retry can fix, then, the cause removed, finished.

The smoke run's finished stages are copied into the run directory first (the trials are what ran
in Tune's per-trial working directories and broke on relative paths; the stages run in CI's
newcomer command, ``.ci/run``), and the sweep is cut to one trial (``ONE_TRIAL``): a trial's
directory does not depend on the sweep's other cells, so the smoke run's trial of the same cell
is the reference."""

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from orchestrator.config.schema import FrontierConfig, config_digest, load
from tests.test_sweep import ROOT, SMOKE, _history, _job, _learner_file, _sha

pytestmark = pytest.mark.slow

# the smoke sweep's single-proxy beta-0 cell alone: one Tune trial in place of three
ONE_TRIAL = {"sweep": {"kl_coefs": [0.0]}, "rl": {"ensemble_objectives": []}, "monitor": {"disjoint_size": ""}}


def _one_trial_config(dst: Path) -> Path:
    import yaml

    cfg = yaml.safe_load((ROOT / SMOKE).read_text())
    for section, values in ONE_TRIAL.items():
        cfg.setdefault(section, {}).update(values)
    dst.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dst


def _copy_stages(smoke_dir: Path, d: Path, config: Path = ROOT / SMOKE) -> None:
    from orchestrator.run.cli import save_config

    d.mkdir(parents=True)
    shutil.copytree(smoke_dir / "stages", d / "stages")
    save_config(load(FrontierConfig, config), d)


def test_main_job_as_typed_stops_at_an_error_no_retry_can_fix_then_finishes(smoke_run, tmp_path):
    """README command 1 as typed (no ``--run-dir``: ``runs/frontier-<hash>`` under the working
    directory), with a relative ``--config``, from a directory that is not the project's, in a
    user's environment. The run directory holds a trial's checkpoint of another reference policy
    (the SFT policy was nudged after the checkpoint was written): the trial refuses it, the sweep
    stops at once (no 3 attempts per trial, no other trial started after it) and the job exits 2
    with one line naming the trial and the cause. Nothing is lost: the policy put back, the same
    command resumes the trial from that checkpoint and ends with the uninterrupted run's numbers.
    The smoke job with a relative ``--run-dir`` from a temporary working directory, and
    ``--resume`` of a relative run directory: ``tests/test_sweep.py::test_kill_sweep_driver_then_resume``;
    how ``cli.resolve`` makes each of them absolute: ``tests/test_cli.py``."""
    from safetensors.torch import load_file, save_file

    _, smoke_dir, _ = smoke_run
    work = tmp_path / "work"
    work.mkdir()
    _one_trial_config(work / "mine.yaml")  # a relative --config too
    rel = Path("runs") / f"frontier-{config_digest(load(FrontierConfig, work / 'mine.yaml'))[:10]}"
    run = work / rel
    _copy_stages(smoke_dir, run, work / "mine.yaml")
    # another reference policy: the SFT policy's weights, nudged (the stage cache keys on config)
    cfg = load(FrontierConfig, ROOT / SMOKE)
    pol = next(x / "policy" / "model.safetensors" for x in run.glob("stages/sft-*")
               if json.loads((x / "DONE.json").read_text()).get("size") == cfg.sft.policy.size)
    original = pol.read_bytes()
    w = load_file(pol)
    k = next(iter(w))
    w[k] = w[k] + 1e-3
    save_file(w, pol, metadata={"format": "pt"})
    # ...and the trial's directory as a killed job left it: checkpoints of the original policy up
    # to step 4 (its last one, step 6, lost), no DONE.json
    (ref,) = [x for x in smoke_dir.glob("rl/proxy-*-kl0-*") if (x / "checkpoints").is_dir() and "-half-" not in x.name]
    trial = run / "rl" / ref.name  # the same cell, the same directory name
    shutil.copytree(ref, trial)
    for f in ("DONE.json", "SUMMARY.json"):
        (trial / f).unlink(missing_ok=True)
    last = sorted((trial / "checkpoints").glob("step_*[0-9]"))
    assert len(last) > 1
    shutil.rmtree(last[-1])
    args = ["--config", "mine.yaml", "--quiet"]
    t0 = time.time()
    p = _job(*args, cwd=work, user=tmp_path / "home", job="jobs.frontier")
    _, err = p.communicate(timeout=900)
    assert p.returncode == 2, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: sweep trial proxy-") and "another reference policy" in line, err[-3000:]
    # the cause reached the user in the job's error line -- and the trial's own log line when Ray
    # forwards it before the job exits (asynchronous: seen missing once in ~10 runs) -- and never in a
    # traceback of a failed (and retried) trial; the trial recorded it in FATAL.json
    assert 1 <= err.count("trained from another reference policy") <= 2, err[-3000:]
    assert "RayTaskError" not in err and "Failure # 1" not in err, err[-3000:]
    fatal = json.loads((trial / "FATAL.json").read_text())
    assert fatal["type"] == "ConfigError" and "trained from another reference policy" in fatal["message"]
    assert list((run / "tune").glob("sweep.stopped-*")), "the stopped experiment is set aside"
    assert not (run / "frontier.json").exists()
    assert sorted(x.name for x in (trial / "checkpoints").iterdir()) == [x.name for x in last[:-1]]
    print(f"stopped after {time.time() - t0:.0f} s")
    # the cause removed (the policy the checkpoints were trained from is back): the same command
    # resumes the trial and finishes
    pol.write_bytes(original)
    p = _job(*args, cwd=work, user=tmp_path / "home", job="jobs.frontier")
    out, err = p.communicate(timeout=900)
    assert p.returncode == 0, err[-3000:]
    assert re.search(rf"{re.escape(ref.name.rsplit('-', 1)[0])}: resumed from \S*{last[-2].name}", err), err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["run_dir"] == str(run.resolve())  # absolute, under the working directory
    fr = json.loads((run / "frontier.json").read_text())
    assert [e["trial"] for e in fr["rl"]] == ["proxy-1x8-kl0"]
    assert json.loads((trial / "DONE.json").read_text())["points"] == json.loads((ref / "DONE.json").read_text())["points"]
    assert _history(trial) == _history(ref)
    assert _sha(_learner_file(trial)) == _sha(_learner_file(ref))
    saved = (run / "config.yaml").read_text()
    assert "runs/" not in saved and "mine.yaml" not in saved
    assert not (work / "tune").exists() and not list(tmp_path.glob("home/ray_results*"))
