"""The jobs as a user runs them: subprocesses, --help, exit code 2 on user errors, nothing clobbered."""

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("job", ["jobs.frontier", "jobs.active"])
def test_help(job):
    r = run(job, "--help")
    assert r.returncode == 0 and "--config" in r.stdout and "--run-dir" in r.stdout and "--resume" in r.stdout


@pytest.mark.parametrize("job, needle", [("jobs.seeds", "--seeds"), ("jobs.sweep", "--list"),
                                         ("jobs.bench", "frontier"), ("jobs.bon_power", "--bootstrap"),
                                         ("jobs.serve", "--port")])
def test_every_job_has_help(job, needle):
    r = run(job, "--help")
    assert r.returncode == 0 and needle in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("key, needle", [("active.arms=[entropy]", "active.arms"),
                                         ("active.members=1", "active.members"),
                                         ("active.size=9x9", "active.size")])
def test_active_refuses_bad_settings_with_exit_2(tmp_path, key, needle):
    r = run("jobs.active", "--config", "jobs/configs/smoke.yaml", "--run-dir", str(tmp_path / "run"), key)
    assert r.returncode == 2 and needle in r.stderr and not (tmp_path / "run").exists(), r.stderr


def test_bon_power_refuses_a_dir_that_is_not_a_run(tmp_path):
    r = run("jobs.bon_power", str(tmp_path))
    assert r.returncode == 2 and "not a finished run" in r.stderr, r.stderr


@pytest.mark.parametrize("args, needle", [
    (["--config", "nope.yaml"], "no such file"),
    (["sft.stepz=3"], "sft.stepz"),
    (["sample.bon_responses_per_prompt=8", "bon.n_max=64"], "bon.n_max"),
    (["proxy.sizes=[2x30]"], "proxy.sizes[0]"),
    (["--resume"], "no such directory to resume"),
])
def test_user_errors_exit_2_with_one_line(args, needle, tmp_path):
    r = run("jobs.frontier", "--config", "jobs/configs/smoke.yaml", "--run-dir", str(tmp_path / "r"), *args)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert not (tmp_path / "r").exists()


def test_malformed_yaml_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sft: {steps: 3\n")
    r = run("jobs.frontier", "--config", str(bad), "--run-dir", str(tmp_path / "r"))
    assert r.returncode == 2 and "malformed YAML" in r.stderr


def test_existing_run_dir_of_another_config_is_untouched(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "config.yaml").write_text("seed: 5\n")
    before = {p: p.stat().st_mtime_ns for p in d.rglob("*")}
    r = run("jobs.frontier", "--config", "jobs/configs/smoke.yaml", "--run-dir", str(d))
    assert r.returncode == 2 and "another config" in r.stderr
    assert {p: p.stat().st_mtime_ns for p in d.rglob("*")} == before


def test_resume_of_missing_or_foreign_dir(tmp_path):
    r = run("jobs.frontier", "--resume")
    assert r.returncode == 2 and "--resume needs --run-dir" in r.stderr
    r = run("jobs.frontier", "--run-dir", str(tmp_path / "none"), "--resume")
    assert r.returncode == 2 and "no such directory" in r.stderr
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    r = run("jobs.frontier", "--config", "jobs/configs/smoke.yaml", "--run-dir", str(tmp_path / "x"))
    assert r.returncode == 2 and "not empty" in r.stderr
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["notes.txt"]


def test_unwritable_run_dir(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    r = run("jobs.frontier", "--config", "jobs/configs/smoke.yaml", "--run-dir", str(ro / "r"))
    assert r.returncode == 2 and "not writable" in r.stderr


def test_corrupt_preferences_file_is_named(tmp_path):
    from orchestrator.data.tables import PREFERENCES, DataError, read_table
    from orchestrator.run.pipeline import preference_arrays

    p = tmp_path / "prefs.parquet"
    pq.write_table(pa.table({"pair_id": [0], "prompt_id": [0], "prompt": ["q"]}), p)
    with pytest.raises(DataError, match="missing column 'response_a'"):
        read_table(p, PREFERENCES)
    good = {"pair_id": [0, 1], "prompt_id": [0, 0], "prompt": ["q", "q"], "response_a": ["a", "b"],
            "response_b": ["b", "c"], "p_a": [1.0, float("nan")], "labeler": ["g", "g"],
            "principle": ["g", "g"], "rationale": ["", ""]}
    pq.write_table(pa.table(good), p)
    with pytest.raises(DataError, match="'p_a' row 1 is NaN"):
        preference_arrays(p, 0.1, 0)
    good["p_a"] = [1.0, 1.5]
    pq.write_table(pa.table(good), p)
    with pytest.raises(DataError, match="row 1 is 1.5"):
        preference_arrays(p, 0.1, 0)
    p.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="not a readable parquet"):
        read_table(p, PREFERENCES)


def test_log_lines_follow_the_current_stderr():
    """The job's log lines go to the ``sys.stderr`` of the moment they are written: one swapped in
    later (and the old one closed) gets them, none is lost on the closed one. (Tune trial processes
    log to the process's own stderr instead; the kill-and-resume drill in test_sweep.py checks a
    resumed trial's ``resumed from`` line reaches the driver.)"""
    import io
    import logging
    from contextlib import redirect_stderr

    from orchestrator.run.cli import setup_logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        first, second = io.StringIO(), io.StringIO()
        with redirect_stderr(first):
            setup_logging()
            logging.getLogger("rlhf.test").info("first trial")
        first.close()
        with redirect_stderr(second):
            logging.getLogger("rlhf.test").info("second trial")
        out = second.getvalue()
        assert out.endswith(" second trial\n") and "Logging error" not in out, out
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


@pytest.mark.parametrize("how", ["default run dir", "relative --run-dir", "relative --resume"])
def test_relative_paths_leave_resolve_absolute(tmp_path, monkeypatch, how):
    """Tune runs each trial in a working directory of its own: every path the job hands on must be
    absolute, resolved against the directory the user typed the command in (not the project's)."""
    from orchestrator.config.schema import FrontierConfig, config_digest, load
    from orchestrator.run.cli import parser, resolve
    from orchestrator.run.main import DEFAULT_CONFIG

    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.yaml").write_text((ROOT / "jobs/configs/smoke.yaml").read_text())
    monkeypatch.chdir(work)
    if how == "relative --resume":
        (work / "old").mkdir()
        (work / "old" / "config.yaml").write_text((ROOT / "jobs/configs/smoke.yaml").read_text())
    argv = {"default run dir": ["--config", "mine.yaml"],
            "relative --run-dir": ["--config", "mine.yaml", "--run-dir", "out/run"],
            "relative --resume": ["--resume", "old"]}[how]
    args = parser("python -m jobs.frontier", "", DEFAULT_CONFIG, resume_dir=True).parse_args(argv)
    cfg, run_dir = resolve("frontier", FrontierConfig, args)
    expect = {"default run dir": work / "runs" / f"frontier-{config_digest(load(FrontierConfig, work / 'mine.yaml'))[:10]}",
              "relative --run-dir": work / "out" / "run", "relative --resume": work / "old"}[how]
    assert run_dir.is_absolute() and run_dir == expect
    if how != "relative --resume":
        assert Path(args.config) == work / "mine.yaml"
