"""``python -m jobs.bench rl`` from a fresh work directory (it builds its inputs, then times the loop)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_bench_rl_runs_from_a_fresh_work_dir(ray_session, tmp_path):
    # the first run in a work dir builds the task and SFT policy: on the bench's own Ray, not on one
    # it happens to find (here the test session's, as in CI: joining it hung waiting for CPUs), and
    # without a second ray.init failing. Two placements (the default's colocated actor and the
    # one-process baseline): the per-role ones are the same RL loop on actors the RL tests start
    r = subprocess.run([sys.executable, "-m", "jobs.bench", "rl", "--work-dir", str(tmp_path / "w"),
                        "--policy", "1x16", "--sft-steps", "5", "--steps", "2", "--warmup", "1", "--rounds", "1",
                        "--no-trl", "--modes", "colocated"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["setting"]["policy"] == "1x16" and out["setting"]["steps_timed"] == 2
    assert out["samples_per_s"] > 0 and "samples_per_s_actors" not in out and "ours_actors" not in out
    assert isinstance(out["actor_overhead_frac"], float) and "trl_samples_per_s" not in out
    for mode in ("local", "colocated"):
        assert {"generate", "update"} <= set(out[f"ours_{mode}"]["phases_s"]), mode


def test_gpu_bench_without_cuda_says_so_and_dry_runs_on_cpu(capsys):
    """``python -m jobs.bench gpu``: "no CUDA device" and exit 0 without CUDA; ``--device cpu`` runs
    the same three phases (a dry run of the code) and ends with one JSON line holding each phase per
    dtype and the FLOPs the MFU is computed from (6N + 12LdT per trained token)."""
    import torch

    from orchestrator.run import bench_gpu

    if not torch.cuda.is_available():
        assert bench_gpu.main([]) == 0 and capsys.readouterr().out.strip() == "no CUDA device"
    argv = ["--device", "cpu", "--size", "1x32", "--prompts", "2", "--responses", "2", "--prompt-len", "8",
            "--new-tokens", "4", "--chunk-tokens", "32", "--no-trl"]
    assert bench_gpu.main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for dt in ("bfloat16", "float32"):
        r = out[dt]
        assert r["batch"] == 4 and all(r[k]["tokens_per_s"] > 0 for k in ("generate", "score", "update"))
        assert r["update"]["flops"] >= 6 * r["params"] * 4 and r["rl_samples_per_s"] > 0
        assert r["sync"]["gb"] == r["params"] * 4 / 1e9 and r["sync"]["d2h_gb_per_s"] > 0
    assert bench_gpu.flops_per_token(100, 2, 8, 10) == 6 * 100 + 12 * 2 * 8 * 10
