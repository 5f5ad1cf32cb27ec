"""Ray Jobs end to end, as an operator runs them (cluster-operations issue): a head started with
``cluster/start_local_head.sh`` (token auth on, dashboard on 127.0.0.1), the smoke profile's beta-0
cells submitted with ``ray job submit``, stopped with ``ray job stop`` mid-RL and resubmitted with
``--resume`` and ``cluster/runtime_env.yaml``: same final metrics as the uninterrupted run.
Also: a client without the token is refused, the dashboard does not answer on the machine's
other addresses, and a secret in the cluster's environment never reaches a run directory or log.

The head gets its own ``--temp-dir`` and ports, so it lives beside the test session's Ray; it is
removed by killing its processes (``ray stop`` would stop every Ray on the machine)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.config.schema import FrontierConfig, load
from orchestrator.run.pipeline import run_frontier

ROOT = Path(__file__).resolve().parents[1]
SMOKE = "jobs/configs/smoke.yaml"
# the smoke sweep's beta-0 cells (two trials, not three), logged to wandb
OVER = ["sweep.wandb=true", "sweep.kl_coefs=[0.0]", "monitor.disjoint_size="]
CANARY = "canary-" + os.urandom(8).hex()  # a "secret" in the cluster's environment (not in this file)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(*args, env, timeout=300, check=True):
    r = subprocess.run([str(Path(sys.executable).parent / "ray"), *args], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-2000:])
    return r


@pytest.fixture(scope="module")
def head():
    temp = Path(tempfile.mkdtemp(prefix="rjt", dir="/tmp"))  # short: Ray's socket paths are length-limited
    dash = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
           "WANDB_MODE": "offline", "WANDB_API_KEY": CANARY, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    # every port of its own: the session's Ray (or any other) on this machine holds the defaults
    ports = [f"--{k}={_free_port()}" for k in ("port", "ray-client-server-port", "dashboard-agent-listen-port",
                                                "dashboard-agent-grpc-port", "runtime-env-agent-port",
                                                "metrics-export-port", "node-manager-port", "object-manager-port")]
    r = subprocess.run(["bash", "cluster/start_local_head.sh", "2", *ports, f"--dashboard-port={dash}",
                        f"--temp-dir={temp}"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    try:
        assert r.returncode == 0, r.stderr[-3000:]
        client = {k: v for k, v in env.items() if k != "WANDB_API_KEY"}  # the submitting shell has no secret
        yield f"http://127.0.0.1:{dash}", client, temp, dash
    finally:
        subprocess.run(["pkill", "-9", "-f", str(temp)])
        time.sleep(1)
        shutil.rmtree(temp, ignore_errors=True)


def _submit(addr, env, sid, *job_args, runtime_env=None):
    rt = ["--runtime-env", "cluster/runtime_env.yaml"] if runtime_env is None else \
        ["--runtime-env-json", json.dumps(runtime_env)]
    for _ in range(30):  # a fresh head's job agent takes a few seconds to come up
        r = _ray("job", "submit", "--address", addr, "--submission-id", sid, "--no-wait", *rt, "--",
                 "python", "-m", "jobs.frontier", *job_args, env=env, check=False)
        if r.returncode == 0 or "No available agent" not in r.stderr:
            break
        time.sleep(2)
    assert r.returncode == 0, (job_args, r.stdout[-2000:], r.stderr[-2000:])


def _client(addr, monkeypatch):
    """The Jobs SDK for polling (a CLI call per poll costs a second of CPU on a 2-core machine)."""
    from ray.job_submission import JobSubmissionClient

    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    return JobSubmissionClient(addr)


def _wait(client, sid, timeout=900) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = str(client.get_job_status(sid).value)
        if s in ("SUCCEEDED", "FAILED", "STOPPED"):
            return s
        time.sleep(1)
    raise TimeoutError(sid)


@pytest.mark.slow
def test_ray_jobs_submit_stop_resume(head, smoke_run, tmp_path, monkeypatch):
    addr, env, temp, dash = head
    a, b = tmp_path / "a", tmp_path / "b"
    # the smoke run's finished stages and RL trials (the session already built them; a trial's
    # directory does not depend on the sweep's other cells): a is the uninterrupted reference --
    # only its report runs, in this process -- and job b runs the sweep's beta-0 cells (the single
    # proxy and the ensemble) again, cut and resumed
    a.mkdir()
    shutil.copytree(smoke_run[1] / "stages", a / "stages", ignore=shutil.ignore_patterns("*.tmp"))
    shutil.copytree(smoke_run[1] / "rl", a / "rl", ignore=shutil.ignore_patterns("*.tmp"))
    frontier = run_frontier(load(FrontierConfig, SMOKE, OVER), a, progress=False)
    assert sorted(e["trial"] for e in frontier["rl"]) == ["ensemble-wco", "proxy-1x8-kl0"]

    # auth stays on: a client shell without the token is refused
    no_token = {**env, "RAY_AUTH_MODE": "disabled"}
    r = _ray("job", "list", "--address", addr, env=no_token, check=False)
    assert r.returncode != 0 and "token" in (r.stdout + r.stderr).lower()
    # the dashboard (and the Jobs API on its port) answers on 127.0.0.1 only
    others = {ip for ip in subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
              if ":" not in ip and not ip.startswith("127.")}
    for ip in others:
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((ip, dash)) != 0, f"dashboard reachable on {ip}"

    client = _client(addr, monkeypatch)

    # 1. the smoke profile's beta-0 cells as a Ray job (trials slowed, wall time only) on the same
    #    stages, stopped mid-RL
    b.mkdir()
    shutil.copytree(a / "stages", b / "stages")  # not the trials: they run
    shutil.copy(a / "config.yaml", b / "config.yaml")
    rt = yaml.safe_load((ROOT / "cluster/runtime_env.yaml").read_text())
    rt["env_vars"]["RLHF_FRONTIER_SLOW_TRIAL"] = "ensemble-wco:2"
    _submit(addr, env, "smoke-b", "--config", SMOKE, "--run-dir", str(b), "--quiet", *OVER, runtime_env=rt)
    deadline = time.time() + 600
    while time.time() < deadline and not list(b.glob("rl/ensemble-wco-*/checkpoints/step_*[0-9]")):
        assert str(client.get_job_status("smoke-b").value) in ("PENDING", "RUNNING"), \
            client.get_job_logs("smoke-b")[-4000:]
        time.sleep(1)
    assert list(b.glob("rl/ensemble-wco-*/checkpoints/step_*[0-9]")), "no RL checkpoint before the deadline"
    _ray("job", "stop", "--address", addr, "smoke-b", env=env)
    assert _wait(client, "smoke-b") == "STOPPED"
    assert not list(b.glob("rl/ensemble-wco-*/DONE.json")), "the slowed trial finished before the stop"
    assert not (b / "frontier.json").exists()

    # 2. resubmitted with --resume: finishes, same final metrics as the uninterrupted job
    _submit(addr, env, "smoke-b-resume", "--resume", str(b), "--quiet")
    assert _wait(client, "smoke-b-resume") == "SUCCEEDED", client.get_job_logs("smoke-b-resume")[-4000:]
    logs = client.get_job_logs("smoke-b-resume")
    assert "restoring the Tune experiment" in logs or "resumed from" in logs, logs[-4000:]
    summary = json.loads(logs.strip().splitlines()[-1])  # the job's last line: its summary
    assert summary["run_dir"] == str(b) and (b / "report.html").is_file()
    refs = [ref for ref in a.glob("rl/*/DONE.json") if ref.parent.name.rsplit("-", 1)[0] in ("ensemble-wco",
                                                                                              "proxy-1x8-kl0")]
    assert len(refs) == 2
    for ref in refs:
        got = json.loads((b / "rl" / ref.parent.name / "DONE.json").read_text())
        assert got["points"] == json.loads(ref.read_text())["points"], ref.parent.name
    got = json.loads((b / "frontier.json").read_text())
    assert json.dumps(got["checks"], sort_keys=True) == json.dumps(frontier["checks"], sort_keys=True)  # NaN-safe

    # 3. a finished run has nothing to resume; a changed config may not reuse the run directory
    #    (both refused before Ray starts, exit 2; a rerun's stage caching: tests/test_pipeline.py)
    py = [sys.executable, "-m", "jobs.frontier"]
    r3 = subprocess.run([*py, "--resume", str(a), "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r3.returncode == 2 and "nothing to resume" in r3.stderr
    r4 = subprocess.run([*py, "--config", SMOKE, "--run-dir", str(a), "rl.lr=0.001"], cwd=ROOT, env=env,
                        capture_output=True, text=True)
    assert r4.returncode == 2 and "another config" in r4.stderr

    # 4. the secret in the cluster's environment is in no run directory and no Ray log
    for root in (a, b, temp):
        for p in root.rglob("*"):
            if p.is_file() and p.stat().st_size < 50_000_000:
                assert CANARY.encode() not in p.read_bytes(), f"secret written to {p}"
