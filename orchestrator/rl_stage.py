"""The RL stage of the main job: which RL runs the frontier needs, their prompts, and running them
``concurrent_runs`` at a time on reusable actor slots (DESIGN.md data flow, step 7)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pyarrow.parquet as pq
import ray

from orchestrator.checkpoint import stream
from orchestrator.config import FrontierConfig, digest, to_dict
from orchestrator.stages import StageResult
from orchestrator.tasks import synthetic as T

log = logging.getLogger("rlhf_frontier")


def rl_rows(cfg: FrontierConfig, task: StageResult) -> tuple[dict, dict]:
    """RL training prompts (fresh, from their own seed stream) and the fixed eval prompts (the
    first ``rl.eval_prompts`` best-of-n prompts, so RL and best-of-n are measured on one set)."""
    rows_of = T.table(cfg.task.countries, cfg.task.animals, cfg.task.unknown_countries)
    train = T.make_prompts(cfg.rl.train_prompts, stream(cfg.seed, "prompts/rl"), cfg.task.families,
                           cfg.task.family_weights, rows_of)
    train_rows = {k: [r[k] for r in train] for k in ("prompt", "family", "meta")}
    prompts = pq.read_table(task.dir / "prompts.parquet").to_pydict()
    ev = [i for i, s in enumerate(prompts["split"]) if s == "bon"][: cfg.rl.eval_prompts]
    eval_rows = {k: [prompts[k][i] for i in ev] for k in ("prompt", "family", "meta")}
    return train_rows, eval_rows


def rl_specs(cfg: FrontierConfig, proxies: list[StageResult]) -> list:
    """One no-penalty run per proxy size (Gao et al.'s main sweep) and one run per ensemble
    objective over every proxy size (Coste et al.)."""
    from orchestrator.rl_loop import RunSpec

    by_size = {p.meta["size"]: p for p in proxies}

    def member(s: str) -> dict:
        return {"name": f"proxy-{s}", "kind": "hf", "path": str(by_size[s].dir / "model"), "stage": by_size[s].key}

    specs = [RunSpec(f"proxy-{s}", (member(s),), cfg.rl.objective, cfg.rl.kl_coef, by_size[s].meta["params"])
             for s in (cfg.rl.sizes or cfg.proxy.sizes)]
    if len(cfg.proxy.sizes) >= 2:
        for obj in cfg.rl.ensemble_objectives:
            specs.append(RunSpec(f"ensemble-{obj}", tuple(member(s) for s in cfg.proxy.sizes), obj, cfg.rl.kl_coef,
                                 sum(p.meta["params"] for p in proxies)))
    return specs


def concurrent_runs(cfg: FrontierConfig, n_runs: int) -> int:
    if cfg.cluster.rl.max_concurrent:
        return min(n_runs, cfg.cluster.rl.max_concurrent)
    cpus = ray.cluster_resources().get("CPU", 1.0)
    return max(1, min(n_runs, int(cpus // cfg.cluster.rl.num_cpus)))


def stage_rl(cfg: FrontierConfig, run_dir: Path, task: StageResult, sft: StageResult, proxies: list[StageResult],
             progress: bool) -> list[dict]:
    """Every RL run of the frontier, ``concurrent_runs`` at a time, each in its own placement group.
    A run's directory is keyed by its inputs; it holds checkpoints while running (a killed job
    resumes from them) and ``DONE.json`` with its summary when finished."""
    import queue
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from orchestrator.rl_loop import execute, make_slot

    torch.set_num_threads(1)  # the driver only shapes rewards and computes advantages
    specs = rl_specs(cfg, proxies)
    rl_cfg = to_dict(cfg.rl)
    for k in ("sizes", "ensemble_objectives", "enabled"):
        rl_cfg.pop(k)
    train_rows, eval_rows = rl_rows(cfg, task)

    def run_one(spec, slots: list) -> dict:
        key = digest({"stage": "rl", "v": 2, "task": task.key, "sft": sft.key, "rl": rl_cfg, "seed": cfg.seed,
                      "name": spec.name, "objective": spec.objective, "kl_coef": spec.kl_coef,
                      "members": [m["stage"] for m in spec.members]})[:16]
        out = run_dir / "rl" / f"{spec.name}-{key}"
        done = out / "DONE.json"
        if done.is_file():
            log.info("rl %-14s cached  (%s)", spec.name, out.name)
            return {**json.loads(done.read_text()), "cached": True}
        t0 = time.perf_counter()
        if not slots:  # the worker's actors, made on its first run that is not cached
            slots.append(make_slot(cfg.cluster.rl, str(sft.dir / "policy"), str(task.dir / "tokenizer"),
                                   list(spec.members), cfg.seed))
        summary = execute(slots[0], cfg.rl, spec, cfg.cluster.rl, str(sft.dir / "policy"), str(task.dir / "tokenizer"),
                          train_rows, eval_rows, out, cfg.seed, progress=progress)
        summary["seconds"] = round(time.perf_counter() - t0, 2)
        tmp = done.with_name("DONE.json.tmp")
        tmp.write_text(json.dumps(summary, indent=1))
        tmp.replace(done)
        ev = summary["points"]
        log.info("rl %-14s done in %.0f s: final kl %.2f, proxy %+.3f, gold %+.3f", spec.name, summary["seconds"],
                 ev[-1]["kl"], ev[-1]["proxy"], ev[-1]["gold"])
        return {**summary, "cached": False}

    todo: queue.Queue = queue.Queue()
    for i, spec in enumerate(specs):
        todo.put((i, spec))
    results: dict[int, dict] = {}

    def worker() -> None:
        slots: list = []
        try:
            while True:
                try:
                    i, spec = todo.get_nowait()
                except queue.Empty:
                    return
                results[i] = run_one(spec, slots)
        except BaseException:
            while not todo.empty():  # stop the other workers after their current run
                todo.get_nowait()
            raise
        finally:
            for s_ in slots:
                s_.shutdown()

    n = concurrent_runs(cfg, len(specs))
    with ThreadPoolExecutor(max_workers=n) as pool:
        for f in [pool.submit(worker) for _ in range(n)]:
            f.result()
    return [results[i] for i in range(len(specs))]
