"""Benchmarks; the last line of output is one JSON object.

``python -m jobs.bench frontier``: wall time, phase breakdown and peak memory of the main job. Runs
``jobs.frontier`` in this process on a fresh run directory (no cached stage) while a thread samples
the proportional set size (PSS) of this process and every descendant (the local Ray's GCS, raylet
and workers), so shared memory is not counted twice.

``python -m jobs.bench rl``: samples/s and tokens/s of the RL loop, time per phase, the overhead of
the Ray-actor version against the same loop with every role in this process, and -- when ``trl`` is
installed -- TRL's RLOO trainer on the same model, reward model, prompts and batch, side by side.

``python -m jobs.bench sync``: the learner -> generators weight sync, object store vs broadcast.

``python -m jobs.bench serve``: the reward service under 1, 8 and 64 concurrent clients on loopback
(``orchestrator/run/bench_serve.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil


class MemorySampler(threading.Thread):
    """Peak PSS (falls back to RSS) of a process tree, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 1.0):
        super().__init__(daemon=True)
        self.root, self.interval, self.peak, self._halt = psutil.Process(pid), interval, 0, threading.Event()

    def sample(self) -> int:
        total = 0
        for p in [self.root, *self.root.children(recursive=True)]:
            try:
                info = p.memory_full_info()
                total += getattr(info, "pss", info.rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return total

    def run(self):
        while not self._halt.is_set():
            self.peak = max(self.peak, self.sample())
            self._halt.wait(self.interval)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.peak


def bench_frontier(args) -> dict:
    from orchestrator.run.main import frontier_main

    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="bench-frontier-")) / "run"
    sampler = MemorySampler(psutil.Process().pid)
    sampler.start()
    t0 = time.perf_counter()
    argv = ["--config", args.config, "--run-dir", str(run_dir), "--quiet", *args.overrides]
    rc = frontier_main(argv, "python -m jobs.frontier", "", "frontier")
    wall = time.perf_counter() - t0
    peak = sampler.stop()
    fj = json.loads((run_dir / "frontier.json").read_text())
    phases: dict[str, float] = {}
    for name, t in fj["timings"].items():
        key = "proxy_training" if name.startswith("proxy-") else name
        # proxies train in parallel: their stage times overlap, report the longest
        phases[key] = max(phases.get(key, 0.0), t["seconds"]) if key == "proxy_training" else t["seconds"]
    print(f"{'phase':<16}{'seconds':>9}")
    for k, v in phases.items():
        print(f"{k:<16}{v:>9.1f}")
    print(f"{'job wall':<16}{wall:>9.1f}   (includes Ray start and report)")
    print(f"{'peak memory':<16}{peak / 2**30:>9.2f} GiB (PSS, driver + Ray processes)")
    return {"bench": "frontier", "rc": rc, "wall_s": round(wall, 1), "peak_mem_gib": round(peak / 2**30, 3),
            "phases_s": {k: round(v, 1) for k, v in phases.items()}, "checks_pass": fj["checks"]["all_pass"],
            "run_dir": str(run_dir)}


def _bench_inputs(work: Path, seed: int, policy: str, sft_steps: int) -> tuple:
    """The default tiny policy (GPT-2 ``policy``) SFT'd briefly on the synthetic task so it ends
    its responses, and a tiny untrained reward model (1x32); cached under ``work``."""
    from orchestrator.config.schema import FrontierConfig, ModelConfig, load
    from orchestrator.nn.models import build_reward_model, load_tokenizer
    from orchestrator.run.cli import save_config
    from orchestrator.run.pipeline import stage_lms, stage_task
    from orchestrator.run.rl_stage import rl_rows

    cfg = load(FrontierConfig, None, [f"seed={seed}", f"sft.steps={sft_steps}", f"sft.policy.size={policy}",
                                      "sft.demos=4000", "sample.label_prompts=16", "sample.bon_prompts=64",
                                      "task.tokenizer_corpus=2000", "rl.eval_prompts=64"])
    save_config(cfg, work)
    task = stage_task(cfg, work)
    sft = stage_lms(cfg, work, task, {"policy": (cfg.sft.policy, cfg.cluster.learner)}, progress=False)["policy"]
    rm_dir = work / "reward-1x32"
    if not (rm_dir / "model.safetensors").is_file():
        tok = load_tokenizer(task.dir / "tokenizer")
        build_reward_model(ModelConfig(size="1x32", n_positions=cfg.sft.policy.n_positions), tok, seed).save_pretrained(rm_dir)
        tok.save_pretrained(rm_dir)
    train_rows, eval_rows = rl_rows(cfg, task)
    return cfg, task, sft, rm_dir, train_rows, eval_rows


def _rl_stepper(cfg, spec, resources, sft, task, train_rows, eval_rows, out: Path, mode: str):
    """(``steps(n)`` -> the metrics of ``n`` more RL steps, ``close()``) for one placement: local
    (one process, no Ray), actors (one Ray actor per role), colocated (every role in one actor)."""
    import ray

    from orchestrator.run.colocated import make_slot
    from orchestrator.run.rl_loop import RLRun, rl_step

    policy, tok = str(sft.dir / "policy"), str(task.dir / "tokenizer")
    if mode == "colocated":
        slot = make_slot(resources, policy, tok, list(spec.members), 0, gold=False)
        ray.get(slot.worker.start.remote(cfg, spec, policy, tok, train_rows, eval_rows, str(out), 0))
        return (lambda n: ray.get(slot.worker.steps.remote(n))), slot.shutdown
    run = RLRun(cfg, spec, resources, policy, tok, train_rows, eval_rows, out, seed=0, gold=False,
                local=mode == "local")
    run.sync_weights()
    return (lambda n: [rl_step(run) for _ in range(n)]), run.shutdown


def _rate(hist: list[dict]) -> dict:
    loop = sum(m["timing/step_s"] - m.get("timing/eval_s", 0) - m.get("timing/checkpoint_s", 0) for m in hist)
    samples = sum(m["throughput/samples_per_s"] * m["timing/step_s"] for m in hist)
    tokens = sum(m["throughput/tokens_per_s"] * m["timing/step_s"] for m in hist)
    phases = {}
    for k in hist[0]:
        if k.startswith("timing/") and k not in ("timing/step_s", "timing/eval_s", "timing/checkpoint_s"):
            phases[k[7:-2]] = sum(m.get(k, 0) for m in hist) / len(hist)
    return {"samples_per_s": samples / loop, "tokens_per_s": tokens / loop, "step_s": loop / len(hist),
            "phases_s": phases, "mean_tokens": sum(m["response/tokens"] for m in hist) / len(hist)}


RL_MODES = ("local", "colocated", "actors", "actors_async")


def _modes(text: str) -> list[str]:
    import argparse

    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in RL_MODES]
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"unknown placement(s) {bad or text!r}: choose from {', '.join(RL_MODES)}")
    return ["local", *[m for m in modes if m != "local"]]


def bench_rl(args) -> dict:
    """Our RLOO loop in Ray actors vs in one process vs TRL's RLOOTrainer, same setting."""
    import contextlib
    import dataclasses

    import numpy as np
    import ray
    import torch

    from orchestrator.config.schema import RLConfig, RoleResources, TrialResources
    from orchestrator.run.rl_loop import RunSpec

    work = Path(os.path.abspath(args.work_dir))  # actors and their stages load from it by path
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    one_thread = TrialResources(learner=RoleResources(1, 1.0), generator=RoleResources(1, 0.5),
                                proxy=RoleResources(1, 0.25), gold=RoleResources(1, 0.25))
    # colocated: the same roles in one process with one CPU in all (one torch thread, as local)
    one_cpu = TrialResources(learner=RoleResources(1, 0.5), generator=RoleResources(1, 0.25),
                             proxy=RoleResources(1, 0.125), gold=RoleResources(1, 0.125), colocate=True)
    # every placement keeps its run; rounds of ``steps / rounds`` steps alternate between them, so
    # a slow spell of the machine hits all alike and the overhead is a paired (per-round) ratio
    modes = {"local": one_thread, "colocated": one_cpu, "actors": one_thread, "actors_async": one_thread}
    modes = {m: r for m, r in modes.items() if m in args.modes}  # "local" is always in: the baseline
    # our own Ray before anything touches Ray: building the inputs would otherwise auto-start one --
    # or join whatever cluster this machine or RAY_ADDRESS points at (a test session's, a `ray start`
    # head) and wait there for CPUs. All placements stay up between rounds but only one computes at a
    # time: logical CPUs for all.
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2 * len(modes), include_dashboard=False, log_to_driver=False)
    with contextlib.redirect_stdout(sys.stderr):
        cfg, task, sft, rm_dir, train_rows, eval_rows = _bench_inputs(work, args.seed, args.policy, args.sft_steps)
    rl = RLConfig(algorithm="rloo", steps=10**6, prompts_per_step=args.prompts, responses_per_prompt=args.responses,
                  max_new_tokens=args.max_new_tokens, lr=1e-5, eval_every=10**6,
                  checkpoint_every=10**6, train_prompts=max(2048, args.prompts))
    spec = RunSpec("bench", ({"name": "rm-1x32", "kind": "hf", "path": str(rm_dir)},), kl_coef=args.kl_coef)
    out: dict = {"bench": "rl", "algorithm": "rloo", "setting": {
        "policy": args.policy, "prompts_per_step": args.prompts, "responses_per_prompt": args.responses,
        "max_new_tokens": args.max_new_tokens, "kl_coef": args.kl_coef, "steps_timed": args.steps}}
    steppers, hists, rounds = {}, {m: [] for m in modes}, []
    try:
        for mode, resources in modes.items():
            out_m = work / f"rl-{mode}"
            shutil.rmtree(out_m, ignore_errors=True)
            cfg_m = dataclasses.replace(rl, async_generation=mode.endswith("_async"))
            steppers[mode] = _rl_stepper(cfg_m, spec, resources, sft, task, train_rows, eval_rows, out_m,
                                         mode.removesuffix("_async"))
            torch.set_num_threads(1)
            steppers[mode][0](args.warmup)
        per_round = max(1, args.steps // args.rounds)
        for _ in range(args.rounds):
            r = {}
            for mode in modes:
                h = steppers[mode][0](per_round)
                hists[mode] += h
                r[mode] = _rate(h)["step_s"]
            rounds.append(r)
    finally:
        for st in steppers.values():
            st[1]()
    res = {m: _rate(h) for m, h in hists.items()}

    def overhead(mode: str) -> float:
        return float(np.median([r[mode] / r["local"] for r in rounds]) - 1)

    if ray.is_initialized():
        ray.shutdown()
    out.update({f"ours_{m}": r for m, r in res.items()})
    # the Ray placement the default config uses (cluster.rl.colocate: true), synchronous
    for key, mode in (("samples_per_s", "colocated"), ("samples_per_s_actors", "actors"),
                      ("samples_per_s_async", "actors_async")):
        if mode in res:
            out[key] = res[mode]["samples_per_s"]
    if "colocated" in res:
        out["tokens_per_s"] = res["colocated"]["tokens_per_s"]
        out["actor_overhead_frac"] = overhead("colocated")
    if "actors" in res:
        out["actor_overhead_frac_per_role_actors"] = overhead("actors")
    out["rounds_step_s"] = rounds
    try:
        import trl  # noqa: F401
        have_trl = not args.no_trl
    except ImportError:
        have_trl = False
    if have_trl:
        from orchestrator.run.trl_baseline import trl_samples_per_s

        with contextlib.redirect_stdout(sys.stderr):
            t = trl_samples_per_s(str(sft.dir / "policy"), str(rm_dir), train_rows["prompt"], "rloo",
                                  steps=args.steps + 1, prompts_per_step=args.prompts,
                                  responses_per_prompt=args.responses, max_new_tokens=args.max_new_tokens,
                                  beta=args.kl_coef, lr=1e-5, threads=1, seed=args.seed)
        out["trl_samples_per_s"] = t["samples_per_s"]
        out["trl"] = {k: t[k] for k in ("trl_version", "steps", "seconds", "mean_completion_len")}
        for key, ours in (("speedup_vs_trl", "samples_per_s"), ("speedup_vs_trl_actors", "samples_per_s_actors"),
                          ("speedup_vs_trl_async", "samples_per_s_async")):
            if ours in out:
                out[key] = out[ours] / t["samples_per_s"]
    names = {"local": "ours, one process", "colocated": "ours, colocated actor", "actors": "ours, actor per role",
             "actors_async": "ours, per role, async"}
    print(f"{'':<22}{'samples/s':>10}{'tokens/s':>10}{'step ms':>9}")
    for m, r in res.items():
        print(f"{names[m]:<22}{r['samples_per_s']:>10.0f}{r['tokens_per_s']:>10.0f}{1000 * r['step_s']:>9.1f}")
    if have_trl:
        print(f"{'TRL RLOOTrainer':<22}{out['trl_samples_per_s']:>10.0f}")
    for m in res:
        if m != "actors_async":
            print(f"phases (ms/step, {m}):", {k: round(1000 * v, 1) for k, v in res[m]["phases_s"].items()})
    over = [f"{names[m].split(', ')[1]} {100 * overhead(m):+.1f}%" for m in ("colocated", "actors") if m in res]
    if over:
        print("Ray overhead vs one process: " + ", ".join(over))
    return out


def bench_label(args) -> dict:
    """RLAIF judge throughput (pairs/s, both orders per pair) with and without chain of thought, on
    synthetic-task pairs (seeded), in this process with ``--threads`` torch threads."""
    import random

    from actors.ai_labeler import AILabeler, load_constitution
    from orchestrator.data.tasks import synthetic as T

    rng = random.Random(args.seed)
    principles, _ = load_constitution("")
    t0 = time.perf_counter()
    judge = AILabeler(args.judge, num_cpus=args.threads, batch_size=args.batch_size, cot_tokens=args.cot_tokens,
                      seed=args.seed)
    load_s = time.perf_counter() - t0
    pairs = {"prompt": [], "response_a": [], "response_b": []}
    for row in T.make_prompts(args.pairs, args.seed, rows=T.table()):
        pairs["prompt"].append(row["prompt"])
        for k in ("response_a", "response_b"):
            pairs[k].append(T.make_demonstration(row["family"], row["meta"], rng))
    pr = [rng.choice(principles)["text"] for _ in range(args.pairs)]
    out = {"judge": args.judge, "threads": args.threads, "load_s": round(load_s, 2), "pairs": args.pairs}
    for cot in (False, True):
        n = args.pairs if not cot else max(1, args.pairs // 4)
        t0 = time.perf_counter()
        judge.label({k: v[:n] for k, v in pairs.items()}, pr[:n], cot=cot)
        dt = time.perf_counter() - t0
        out[f"pairs_per_s_{'cot' if cot else 'no_cot'}"] = n / dt
        print(f"{'with' if cot else 'without'} chain of thought: {n} pairs in {dt:.1f} s = {n / dt:.2f} pairs/s")
    return out


def bench_sync(args) -> dict:
    """Weight sync learner -> generators (``cluster.rl.weight_sync``): a ``PolicyLearner`` and
    ``--generators`` ``RolloutGenerator`` actors holding a GPT-2 policy of ``--size`` (a ``tiny:``
    model, built from config), timed over ``--repeats`` syncs each way: ``object_store`` (the
    learner's flat fp32 buffer put in Ray's object store, every generator reads and loads it) and
    ``broadcast`` (one gloo broadcast from the learner to the generators; NCCL on GPUs). The
    median of the timed syncs, after one untimed."""
    import numpy as np
    import ray

    from actors.policy_learner import PolicyLearner
    from actors.rollout_generator import RolloutGenerator
    from orchestrator.config.schema import RoleResources
    from orchestrator.nn import tiny
    from orchestrator.run.actor_group import ActorGroup

    policy = tiny.resolve(f"tiny:gpt2-{args.size}")
    ray.init(address="local", num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False)
    share = max(2, os.cpu_count() or 2) / (1 + args.generators)
    learner = ActorGroup(PolicyLearner, RoleResources(1, share), "", {"path": policy}, 0)
    gen = ActorGroup(RolloutGenerator, RoleResources(args.generators, share), policy)
    out: dict = {"bench": "sync", "size": args.size, "generators": args.generators, "repeats": args.repeats}
    try:
        n = ray.get(learner.actors[0].push_weights.remote())  # no group yet: the count only
        out["params"], out["gb"] = n, n * 4 / 1e9
        address = ray.get(learner.actors[0].weight_group_address.remote())
        world = 1 + args.generators
        ray.get([learner.actors[0].open_weight_group.remote(address, 0, world, "gloo")] +
                [g.open_weight_group.remote(address, 1 + i, world, "gloo") for i, g in enumerate(gen.actors)])
        paths = {"object_store": lambda k: ray.get(gen.all("load_weights", learner.one("weights"), k)),
                 "broadcast": lambda k: ray.get([learner.actors[0].push_weights.remote(), *gen.all("pull_weights", k)])}
        for name, sync in paths.items():
            sync(0)  # warm-up
            t = []
            for k in range(args.repeats):
                t0 = time.perf_counter()
                sync(k + 1)
                t.append(time.perf_counter() - t0)
            ms = 1000 * float(np.median(t))
            out[name] = {"ms_per_sync": ms, "gb_per_s_to_all": out["gb"] * args.generators / (ms / 1000)}
            print(f"{name:<13} {ms:8.1f} ms per sync ({out['gb']:.2f} GB to {args.generators} generators: "
                  f"{out[name]['gb_per_s_to_all']:.2f} GB/s)", flush=True)
        out["broadcast_speedup"] = out["object_store"]["ms_per_sync"] / out["broadcast"]["ms_per_sync"]
    finally:
        learner.shutdown()
        gen.shutdown()
        ray.shutdown()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    f = sub.add_parser("frontier", help="the main job on a config, from scratch")
    f.add_argument("--config", default=str(Path(__file__).resolve().parents[2] / "jobs" / "configs" / "default.yaml"))
    f.add_argument("--run-dir", default=None, help="default: a fresh temporary directory")
    f.add_argument("overrides", nargs="*", metavar="key.sub=value")
    r = sub.add_parser("rl", help="RL-loop throughput: Ray actors vs one process vs TRL (when installed)")
    r.add_argument("--work-dir", default="runs/bench-rl", help="cached inputs (task, short SFT, reward model)")
    r.add_argument("--policy", default="2x128", help="policy size LAYERSxWIDTH (default: the default policy)")
    r.add_argument("--sft-steps", type=int, default=300, help="SFT steps for the bench policy")
    r.add_argument("--prompts", type=int, default=16, help="prompts per step")
    r.add_argument("--responses", type=int, default=2, help="responses per prompt")
    r.add_argument("--max-new-tokens", type=int, default=16)
    r.add_argument("--kl-coef", type=float, default=0.05)
    r.add_argument("--steps", type=int, default=40, help="timed steps")
    r.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    r.add_argument("--rounds", type=int, default=4, help="timed steps alternate between placements in this many rounds")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--no-trl", action="store_true", help="skip the TRL comparison")
    r.add_argument("--modes", type=_modes, default=list(RL_MODES),
                   help=f"placements to time, comma-separated, from {','.join(RL_MODES)} (default: all; "
                        "local, the baseline of the overheads, is always timed)")
    sub.add_parser("gpu", help="one RL step's phases on one GPU, torch only (python -m jobs.bench gpu --help)")
    sy = sub.add_parser("sync", help="weight sync learner -> generators: object store vs broadcast")
    sy.add_argument("--size", default="8x512", help="GPT-2 policy LAYERSxWIDTH (a tiny: model: at most 8x512)")
    sy.add_argument("--generators", type=int, default=2)
    sy.add_argument("--repeats", type=int, default=5)
    lb = sub.add_parser("label", help="RLAIF judge throughput, with and without chain of thought")
    lb.add_argument("--judge", default="smollm2-135m-instruct", help="the default packaged judge, an HF path or hub id")
    lb.add_argument("--pairs", type=int, default=64, help="pairs judged without CoT (a quarter of them with CoT)")
    lb.add_argument("--threads", type=int, default=2)
    lb.add_argument("--batch-size", type=int, default=16)
    lb.add_argument("--cot-tokens", type=int, default=48)
    lb.add_argument("--seed", type=int, default=0)
    from orchestrator.run.bench_serve import add_parser, bench_serve

    add_parser(sub)
    args = p.parse_args(argv)
    result = {"frontier": bench_frontier, "rl": bench_rl, "label": bench_label, "sync": bench_sync,
              "serve": bench_serve}[args.what](args)
    print(json.dumps(result))
    return 0 if result.get("rc", 0) == 0 else 1

