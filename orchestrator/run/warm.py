"""WARM (Ramé et al. 2024, "WARM: On the Benefits of Weight Averaged Reward Models"): one reward
model whose weights are the average of members fine-tuned from one initialization
(``proxy.warm``: the seed size's proxy and its ``seed`` or ``bootstrap`` members). Linear mode
connectivity of fine-tunings from a shared pretrained start makes the average a model, not noise;
Ramé et al. find it more robust to reward hacking than the prediction ensemble at the cost of one
model at inference. A cached proxy stage like the others (``bon_scores.parquet``, ``model/``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import ray
from safetensors.torch import load_file, save_file

from actors.reward_ensemble import RewardEnsemble
from orchestrator.config.members import warm_members, warm_name
from orchestrator.config.schema import FrontierConfig
from orchestrator.data import tables as D
from orchestrator.math.ensembles import weight_average
from orchestrator.run.actor_group import ActorGroup
from orchestrator.run.roles import tokenizer_dir
from orchestrator.run.stages import StageResult, proxy_name, run_stage


def stage_warm(cfg: FrontierConfig, run_dir: Path, task: StageResult, sample: StageResult,
               proxies: list[StageResult], pool, tag: str = "") -> list[StageResult]:
    """``[proxy-<size><tag>-warm]``: the uniform weight average of ``warm_members`` (every member's
    safetensors, key by key), saved as a model and scored on the best-of-n pool; [] when off.
    ``pool()`` -> (the pool's rows, its distinct rows, each row's index among them)."""
    name = warm_name(cfg, tag)
    if not name:
        return []
    by_name = {proxy_name(p): p for p in proxies}
    members = [by_name[n] for n in warm_members(cfg, tag)]
    inputs = {"stage": "warm", "v": 1, "members": [m.key for m in members], "sample": sample.key, "name": name}

    def fn(out: Path) -> dict:
        sds = [load_file(str(m.dir / "model" / "model.safetensors")) for m in members]
        shutil.copytree(members[0].dir / "model", out / "model")
        save_file(weight_average(sds), str(out / "model" / "model.safetensors"), metadata={"format": "pt"})
        samples, uniq, back = pool()
        grp = ActorGroup(RewardEnsemble, cfg.cluster.proxy, "proxy",
                         [{"name": name, "kind": "hf", "path": str(out / "model"), "head": "trained"}],
                         tokenizer_dir(task), replicas=1, chat_template=cfg.task.dataset.chat_template)
        try:
            sc = ray.get(grp.one("score", {"prompt": uniq["prompt"], "response": uniq["response"]}))
        finally:
            grp.shutdown()
        D.write_table({"prompt_id": samples["prompt_id"], "sample_id": samples["sample_id"],
                       "score": sc.values[back, 0].tolist()}, out / "bon_scores.parquet")
        return {"name": name, "size": members[0].meta["size"], "params": members[0].meta["params"],
                "warm_members": [proxy_name(m) for m in members]}

    return [run_stage(run_dir, "proxy", inputs, fn)]
