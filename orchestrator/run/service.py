"""The reward service's contract (issue 23), without Serve: what a finished run serves
(``reward_models.json``, written by the main job), how a score request is read and checked, and
how the answer is put together. ``orchestrator.run.rm_server`` serves it; ``jobs.serve`` starts it.

A run's proxies are served as the RL runs saw them: the same ``RewardEnsemble`` member dicts
(``rl_stage.proxy_member``: path, and ``norm`` -- the SFT-pool mean and s.d. -- under
``rl.normalize_proxies``), scored by the same code, which is batch-invariant
(``nn.models.invariant_chunks``): a served score equals the run's in-process score bit for bit,
whatever other requests it was batched with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.config.loading import ConfigError

MANIFEST = "reward_models.json"
FORMAT = 1
SCORING = 2
"""The scoring code's version: 2 = batch-invariant passes (a run scored by version 1 padded rows to
their batch's longest, so its scores depended on their batch in the last bits)."""
AGGREGATES = ("mean", "wco", "uwo")
REQUEST_KEYS = ("prompts", "responses", "models", "aggregate")


def service_members(cfg, run_dir: Path, proxies: list, calibration: dict | None) -> list[dict]:
    """The served models of a run: every trained proxy (as ``rl_stage.proxy_member`` makes it for
    the RL runs; paths relative to ``run_dir``) and every gold member. Each entry: ``name``,
    ``role``, ``member`` (the ensemble member dict), ``parameters``, ``calibration`` (held-out
    pairs; None for gold)."""
    from orchestrator.run.rl_stage import proxy_member
    from orchestrator.run.roles import gold_members
    from orchestrator.run.stages import proxy_name

    keys = ("tau", "acc", "nll", "brier", "ece", "nll_tau", "ece_tau", "pairs")
    out, seen = [], set()
    for p in proxies:
        name = proxy_name(p)
        if name in seen:
            continue
        seen.add(name)
        cal = (calibration or {}).get(name)
        tau = (cal or {}).get("tau")
        if (p.dir / "bon_scores.parquet").is_file():
            m = proxy_member(cfg, p, tau)
        else:  # a proxy without a best-of-n pool score (none today): served raw
            m = {"name": name, "kind": "hf", "path": str(p.dir / "model"), "stage": p.key}
        m["path"] = _relative(m["path"], run_dir)
        out.append({"name": name, "role": "proxy", "member": m, "parameters": p.meta.get("params"),
                    "calibration": {k: cal[k] for k in keys if k in cal} if cal else None})
    for m in gold_members(cfg):
        m = dict(m)
        if "path" in m:
            m["path"] = _relative(m["path"], run_dir)
        out.append({"name": m["name"], "role": "gold", "member": m,
                    "parameters": 0 if m["kind"] == "oracle" else None, "calibration": None})
    return out


def _relative(path: str, run_dir: Path) -> str:
    p = Path(path)
    try:
        return str(p.relative_to(run_dir))
    except ValueError:
        return str(p)  # outside the run (a user's gold RM): as it was given


def write_manifest(cfg, run_dir: Path, task, proxies: list, calibration: dict | None) -> Path:
    """``RUN/reward_models.json``: what ``jobs.serve`` serves (written before frontier.json, so a run
    with frontier.json has it)."""
    man = manifest(cfg, run_dir, task, proxies, calibration)
    path = run_dir / MANIFEST
    tmp = path.with_name(MANIFEST + ".tmp")
    tmp.write_text(json.dumps(man, indent=1))
    tmp.replace(path)
    return path


def manifest(cfg, run_dir: Path, task, proxies: list, calibration: dict | None) -> dict:
    """The served models of a run and how they score (paths relative to ``run_dir``)."""
    from orchestrator.config.schema import config_digest
    from orchestrator.report.render import versions

    prompts = task.dir / "prompts.parquet"
    tok = task.dir / "tokenizer"
    c = cfg.cluster
    man = {"format": FORMAT, "scoring": SCORING, "versions": versions(), "config_hash": config_digest(cfg),
           "prompts": _relative(str(prompts), run_dir) if prompts.is_file() else None,
           "tokenizer": _relative(str(tok), run_dir) if tok.is_dir() else "",
           "chat_template": cfg.task.dataset.chat_template, "uwo_lambda": cfg.rl.uwo_lambda,
           # the scoring settings that shape a score's last bits: dtype, pass size, torch threads
           # (one GEMM splits its work by threads: 1 and 3 threads differ on ~2% of rows)
           "roles": {r: {"dtype": getattr(c, r).dtype, "batch_tokens": getattr(c, r).batch_tokens,
                         "threads": max(1, int(getattr(c, r).num_cpus))} for r in ("proxy", "gold")},
           "models": service_members(cfg, run_dir, proxies, calibration)}
    return man


def absolute(man: dict, run_dir: Path) -> dict:
    """The manifest with its paths made absolute against ``run_dir`` (absolute ones stay)."""
    man = json.loads(json.dumps(man))
    for key in ("prompts", "tokenizer"):
        if man.get(key):
            man[key] = str(Path(run_dir) / man[key])
    for e in man["models"]:
        if "path" in e["member"]:
            e["member"]["path"] = str(Path(run_dir) / e["member"]["path"])
    return man


def load_manifest(run_dir: str | Path) -> dict:
    """The manifest of a finished run, its paths made absolute; a ``ConfigError`` (exit 2) naming
    what is wrong: no such directory, an unfinished run (no frontier.json), a run of another
    version (no manifest, another format or scoring version), a model directory gone."""
    from orchestrator.report.render import versions

    run = Path(run_dir)
    if not run.is_dir():
        raise ConfigError(f"--run-dir: {run}: no such directory")
    if not (run / "frontier.json").is_file():
        hint = (f"resume it: python -m jobs.frontier --resume {run}" if (run / "config.yaml").is_file()
                else "not a run directory of python -m jobs.frontier")
        raise ConfigError(f"--run-dir: {run} is not a finished run (no frontier.json): {hint}")
    path = run / MANIFEST
    if not path.is_file():
        raise ConfigError(f"--run-dir: {run} was written by another version of rlhf-frontier (no {MANIFEST}); "
                          f"rerun python -m jobs.frontier --run-dir {run} to rebuild it from its cached stages")
    try:
        man = json.loads(path.read_text())
    except ValueError as e:
        raise ConfigError(f"--run-dir: {path} is not valid JSON ({e})") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT or man.get("scoring") != SCORING:
        got = (man.get("format"), man.get("scoring")) if isinstance(man, dict) else None
        raise ConfigError(f"--run-dir: {path} is of another version (format, scoring = {got}; this rlhf-frontier "
                          f"reads {(FORMAT, SCORING)}); rerun python -m jobs.frontier --run-dir {run}")
    mine = versions().get("rlhf-frontier")
    if man.get("versions", {}).get("rlhf-frontier") != mine:
        theirs = man.get("versions", {}).get("rlhf-frontier")
        raise ConfigError(f"--run-dir: {run} was written by rlhf-frontier {theirs}, this is {mine}; "
                          f"rerun python -m jobs.frontier --run-dir {run}")
    man = absolute(man, run)
    for e in man["models"]:
        m = e["member"]
        if "path" in m and not Path(m["path"]).is_dir():
            raise ConfigError(f"--run-dir: model {e['name']!r}: {m['path']} is missing")
    return man


def prompt_table(man: dict) -> dict[str, tuple[str, str]]:
    """{prompt text: (family, meta)} of the run's task: what the task's oracle needs to score a row."""
    if not man.get("prompts"):
        return {}
    import pyarrow.parquet as pq

    t = pq.read_table(man["prompts"], columns=["prompt", "family", "meta"]).to_pydict()
    return {p: (f, m) for p, f, m in zip(t["prompt"], t["family"], t["meta"])}


class RequestError(Exception):
    """A request the service refuses: HTTP ``status`` and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class ScoreRequest:
    rows: dict  # prompt, response (and family, meta where the oracle scores)
    models: list[str]
    aggregate: str


def parse_score(body: bytes, man: dict, prompts: dict, max_rows: int, max_chars: int) -> ScoreRequest:
    """A ``POST /v1/score`` body checked: JSON object; ``prompts`` and ``responses`` non-empty lists
    of strings of equal length, at most ``max_rows``, each at most ``max_chars`` characters;
    ``models`` (optional) known names; ``aggregate`` mean | wco | uwo. 400 (404: an unknown model)
    with a one-line message naming the field and the row."""
    try:
        req = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(400, f"malformed JSON: {e}") from None
    if not isinstance(req, dict):
        raise RequestError(400, f"the body must be a JSON object, got {type(req).__name__}")
    extra = sorted(set(req) - set(REQUEST_KEYS))
    if extra:
        raise RequestError(400, f"unknown field {extra[0]!r}; fields: {', '.join(REQUEST_KEYS)}")
    cols = {}
    for key in ("prompts", "responses"):
        v = req.get(key)
        if v is None:
            raise RequestError(400, f"{key}: missing (a list of strings)")
        if not isinstance(v, list):
            raise RequestError(400, f"{key}: expected a list of strings, got {type(v).__name__}")
        if not v:
            raise RequestError(400, f"{key}: empty; send at least one row")
        if len(v) > max_rows:
            raise RequestError(400, f"{key}: {len(v)} rows, at most {max_rows} per request")
        for i, x in enumerate(v):
            if not isinstance(x, str):
                raise RequestError(400, f"{key}[{i}]: expected a string, got {type(x).__name__}")
            if len(x) > max_chars:
                raise RequestError(400, f"{key}[{i}]: {len(x)} characters, at most {max_chars}")
        cols[key] = v
    if len(cols["prompts"]) != len(cols["responses"]):
        raise RequestError(400, f"prompts has {len(cols['prompts'])} rows, responses {len(cols['responses'])}: "
                                "one response per prompt")
    known = [e["name"] for e in man["models"]]
    models = req.get("models")
    if models is None:
        models = known
    elif not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise RequestError(400, "models: expected a non-empty list of model names")
    for m in models:
        if m not in known:
            raise RequestError(404, f"unknown model {m!r}; GET /v1/models lists them: {', '.join(known)}")
    models = list(dict.fromkeys(models))
    agg = req.get("aggregate", "mean")
    if agg not in AGGREGATES:
        raise RequestError(400, f"aggregate: {agg!r} must be one of {', '.join(AGGREGATES)}")
    rows = {"prompt": cols["prompts"], "response": cols["responses"]}
    kind = {e["name"]: e["member"]["kind"] for e in man["models"]}
    if any(kind[m] == "oracle" for m in models):  # the task's oracle scores a prompt by its metadata
        missing = [i for i, p in enumerate(rows["prompt"]) if p not in prompts]
        if missing:
            raise RequestError(400, f"prompts[{missing[0]}]: not a prompt of this run's task, which the gold "
                                    f"oracle needs ({len(missing)} such rows); leave the oracle out of models")
        rows["family"] = [prompts[p][0] for p in rows["prompt"]]
        rows["meta"] = [prompts[p][1] for p in rows["prompt"]]
    return ScoreRequest(rows, models, agg)


def answer(results: dict[str, dict], req: ScoreRequest, man: dict) -> dict:
    """The response: each model's scores (and the oracle's per-principle scores), and the aggregate
    (``aggregate_np`` over the requested proxies' scores; null when none was requested)."""
    from orchestrator.math.ensembles import aggregate_np

    role = {e["name"]: e["role"] for e in man["models"]}
    out: dict = {"scores": {m: results[m]["scores"] for m in req.models}}
    principles = {m: results[m]["principles"] for m in req.models if results[m].get("principles")}
    if principles:
        out["principles"] = principles
    over = [m for m in req.models if role[m] == "proxy"]
    if over:
        z = np.stack([np.asarray(results[m]["scores"], np.float64) for m in over], axis=1)
        agg = aggregate_np(z, req.aggregate, float(man.get("uwo_lambda", 0.1)))
        out["aggregate"] = {"objective": req.aggregate, "over": over, "scores": [float(x) for x in agg]}
    else:
        out["aggregate"] = None
    return out


def models_listing(man: dict, parameters: dict[str, int]) -> dict:
    """``GET /v1/models``: name, role, parameters, calibration (when known), normalization."""
    data = []
    for e in man["models"]:
        m = e["member"]
        data.append({"name": e["name"], "role": e["role"], "kind": m["kind"],
                     "parameters": parameters.get(e["name"], e.get("parameters")),
                     "calibration": e.get("calibration"),
                     "normalization": ({"shift": m["norm"][0], "scale": m["norm"][1]} if "norm" in m else None),
                     **({"principle": m["principle"]} if m.get("principle") else {})})
    return {"object": "list", "data": data, "config_hash": man.get("config_hash")}
