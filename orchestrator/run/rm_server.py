"""A finished run's reward models as a service on Ray Serve (issue 23; ``python -m jobs.serve``).

As OpenRLHF's ``serve_rm`` and verl's reward workers put the reward model behind a server that many
rollout workers call, each served model here is a Serve deployment of its own (its replicas and
autoscaling from ``cluster.serve.models``), wrapping the ``RewardEnsemble`` the run scored with:
the same member dict, the same batch-invariant forward passes (``nn.models.invariant_chunks``), so
a served score equals the run's in-process score bit for bit on the same device and dtype, however
``serve.batch`` groups the requests of concurrent clients. One entry deployment parses and checks
the HTTP request (``orchestrator.run.service``), fans it out and aggregates:

* ``POST /v1/score`` ``{"prompts": [...], "responses": [...], "models": [...], "aggregate": "mean"}``
* ``GET /v1/models`` -- name, role, parameters, calibration, normalization of each model
* ``GET /healthz``

Overload sheds at once: more than ``max_queued_requests`` waiting beyond the
``max_ongoing_requests`` at work -> 503 with ``Retry-After`` (per entry replica; Serve's own
backpressure is a second line). Binds to 127.0.0.1 unless the config says
otherwise; elsewhere a bearer token is required (only its SHA-256 reaches the replicas).

``serve run orchestrator.run.rm_server:app run_dir=RUN`` accepts it too (``--host`` / ``--port`` are then
``serve run``'s).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from orchestrator.run.service import (
    RequestError,
    answer,
    models_listing,
    parse_score,
    prompt_table,
)

APP = "rewards"


def _rows_in(items: list[dict]) -> int:
    """``serve.batch`` counts rows, not requests: a batch is up to ``max_batch_rows`` rows."""
    return sum(len(it["response"]) for it in items)


@serve.deployment
class RewardModelServer:
    """One served reward model: a one-member ``RewardEnsemble`` behind a row-counting batch."""

    def __init__(self, role: str, member: dict, tokenizer_dir: str, threads: int, chat_template: str,
                 batch_tokens: int, dtype: str, device: str, max_batch_rows: int, batch_wait_s: float):
        """``threads``: torch threads -- the run's scoring role's, whatever CPU share the replica
        holds (a GEMM's rounding depends on how many threads split it)."""
        from actors.reward_ensemble import RewardEnsemble

        self.name, self.threads = member["name"], threads
        self.ens = RewardEnsemble(role, [member], tokenizer_dir, threads, chat_template, batch_tokens, device, dtype)
        self._score.set_max_batch_size(max_batch_rows)
        self._score.set_batch_wait_timeout_s(batch_wait_s)

    def parameters(self) -> int:
        return int(self.ens.n_params()[self.name])

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005, batch_size_fn=_rows_in)
    async def _score(self, items: list[dict]) -> list[dict]:
        rows = {k: [x for it in items for x in it[k]] for k in items[0]}
        sc = self.ens.score(rows)
        out, i = [], 0
        for it in items:
            n = len(it["response"])
            out.append({"scores": sc.values[i: i + n, 0].tolist(),
                        "principles": {p: np.asarray(v)[i: i + n].tolist() for p, v in sc.principles.items()}})
            i += n
        return out

    async def score(self, rows: dict) -> dict:
        """``{"scores": [...], "principles": {p: [...]}}`` of ``rows`` (prompt, response; family and
        meta for the oracle)."""
        return await self._score(rows)


def _error(status: int, message: str, retry_after: int = 0) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return JSONResponse({"error": {"message": message}}, status_code=status, headers=headers)


@serve.deployment
class RewardService:
    """The HTTP entry: checks a request, fans it out to the models' deployments, answers."""

    def __init__(self, manifest: dict, models: dict, limits: dict, token_sha256: str = ""):
        self.man, self.models, self.limits, self.token = manifest, models, limits, token_sha256
        self.prompts = prompt_table(manifest)
        self.kind = {e["name"]: e["member"]["kind"] for e in manifest["models"]}
        self._parameters: dict | None = None
        # admission: max_ongoing score requests work at once, max_queued more wait, the rest get 503
        # at once. Done here, not by Serve's router: a router that finds every replica at capacity
        # retries with a backoff, and at 64 clients that cut throughput from 82 to 8 requests/s
        self._working = asyncio.Semaphore(limits["max_ongoing"])
        self._inside = 0

    def _authorized(self, request: Request) -> bool:
        if not self.token:
            return True
        got = request.headers.get("authorization", "")
        if not got.lower().startswith("bearer "):
            return False
        return hmac.compare_digest(hashlib.sha256(got[7:].strip().encode()).hexdigest(), self.token)

    def members(self) -> dict[str, dict]:
        """{name: the ensemble member dict} of every served model (an RL run checks its own against them)."""
        return {e["name"]: e["member"] for e in self.man["models"]}

    async def score_rows(self, rows: dict, models: list[str]) -> dict:
        """Each model's ``{"scores", "principles"}`` of ``rows`` -- in pieces of ``max_batch_rows``
        rows, all models at once. (The HTTP path and the RL loop's client both call this.)"""
        step = self.limits["max_batch_rows"]
        n = len(rows["response"])
        calls = {}
        for m in models:
            cols = ("prompt", "response", "family", "meta") if self.kind[m] == "oracle" else ("prompt", "response")
            calls[m] = [self.models[m].score.remote({k: rows[k][i: i + step] for k in cols})
                        for i in range(0, n, step)]
        parts = await asyncio.gather(*[asyncio.gather(*c) for c in calls.values()])
        out = {}
        for m, pieces in zip(calls, parts):
            keys = pieces[0]["principles"].keys()
            out[m] = {"scores": [x for p in pieces for x in p["scores"]],
                      "principles": {k: [x for p in pieces for x in p["principles"][k]] for k in keys}}
        return out

    async def __call__(self, request: Request) -> JSONResponse:
        path = request.url.path.rstrip("/") or "/"
        routes = {"/healthz": "GET", "/v1/models": "GET", "/v1/score": "POST"}
        if path not in routes:
            return _error(404, f"no route {request.url.path}; routes: POST /v1/score, GET /v1/models, GET /healthz")
        if request.method != routes[path]:
            return _error(405, f"{request.method} {path}: use {routes[path]}")
        if path == "/healthz":
            return JSONResponse({"status": "ok", "models": len(self.models)})
        if not self._authorized(request):
            return _error(401, "missing or wrong bearer token (Authorization: Bearer ...)")
        try:
            if path == "/v1/models":
                if self._parameters is None:
                    got = await asyncio.gather(*[self.models[m].parameters.remote() for m in self.models])
                    self._parameters = dict(zip(self.models, got))
                return JSONResponse(models_listing(self.man, self._parameters))
            if self._inside >= self.limits["max_ongoing"] + self.limits["max_queued"]:
                return _error(503, f"overloaded: {self._inside} requests in progress or waiting; retry later",
                              self.limits["retry_after_s"])
            self._inside += 1
            try:
                async with self._working:
                    req = parse_score(await request.body(), self.man, self.prompts, self.limits["max_rows"],
                                      self.limits["max_chars"])
                    return JSONResponse(answer(await self.score_rows(req.rows, req.models), req, self.man))
            finally:
                self._inside -= 1
        except RequestError as e:
            return _error(e.status, e.message)


def build_app(man: dict, cfg, token: str = "", roles: dict | None = None):
    """The Serve application of a run's manifest (``service.load_manifest``) under ``cfg``
    (``ServeConfig``). ``token``: the bearer token clients must send ("" = none). ``roles``: each
    role's scoring settings (dtype, batch_tokens, threads) where they are not the manifest's (an RL
    run's roles are ``cluster.rl``'s)."""
    models = {}
    pieces = max(cfg.max_batch_rows, cfg.max_ongoing_requests * -(-cfg.max_rows // cfg.max_batch_rows) + 8)
    for e in man["models"]:
        s = cfg.model(e["name"])
        role = (roles or man["roles"])[e["role"]]
        # room for every piece the entry can have in flight (its working requests x a request's pieces):
        # no queue limit of its own (it would count one request's simultaneous pieces as a queue), and
        # a router never backs off from a model at capacity
        d = RewardModelServer.options(name=f"model-{e['name']}", max_ongoing_requests=pieces, **s.deployment_options())
        models[e["name"]] = d.bind(e["role"], e["member"], man["tokenizer"], role["threads"], man["chat_template"],
                                   role["batch_tokens"], role["dtype"], "cuda" if s.num_gpus else "cpu",
                                   cfg.max_batch_rows, cfg.batch_wait_ms / 1000)
    # the entry admits (and sheds) itself; Serve's own queue and 503 are the second line
    entry = RewardService.options(name="entry",
                                  max_ongoing_requests=cfg.max_ongoing_requests + cfg.max_queued_requests + 8,
                                  max_queued_requests=cfg.max_queued_requests,
                                  backpressure_config={"status_code": 503, "retry_after_s": cfg.retry_after_s},
                                  **cfg.entry.deployment_options())
    limits = {"max_rows": cfg.max_rows, "max_chars": cfg.max_chars, "max_batch_rows": cfg.max_batch_rows,
              "retry_after_s": cfg.retry_after_s, "max_ongoing": cfg.max_ongoing_requests,
              "max_queued": cfg.max_queued_requests}
    return entry.bind(man, models, limits, hashlib.sha256(token.encode()).hexdigest() if token else "")


def service_config(run_dir: str, overrides: list[str] = ()):
    """The run's manifest and its ``cluster.serve`` (from the run's config.yaml, with ``cluster.*``
    overrides); ``ConfigError`` naming the problem. The token is checked: required off loopback."""
    from orchestrator.config.schema import ConfigError, FrontierConfig, load
    from orchestrator.run.service import load_manifest

    man = load_manifest(run_dir)
    bad = [o for o in overrides if not o.startswith("cluster.")]
    if bad:
        raise ConfigError(f"{bad[0]}: a served run's settings are fixed; only cluster.* keys can change")
    cfg = load(FrontierConfig, os.path.join(run_dir, "config.yaml"), list(overrides))
    s = cfg.cluster.serve
    token = os.environ.get(s.token_env, "")
    if not s.loopback and not token:
        raise ConfigError(f"cluster.serve.host: {s.host} is not loopback: set a token in ${s.token_env} "
                          "(clients send Authorization: Bearer TOKEN)")
    return man, cfg, token


def app(args: dict):
    """``serve run orchestrator.run.rm_server:app run_dir=RUN [key=value ...]``: the application builder."""
    args = dict(args)
    run_dir = args.pop("run_dir", None)
    if not run_dir:
        raise ValueError("serve run orchestrator.run.rm_server:app needs run_dir=RUN")
    man, cfg, token = service_config(os.path.abspath(run_dir), [f"{k}={v}" for k, v in args.items()])
    return build_app(man, cfg.cluster.serve, token)


def start(man: dict, cfg, token: str = "", port: int | None = None, host: str | None = None) -> str:
    """Deploy on Ray Serve (Ray must be initialized) and return the base URL."""
    host = host or cfg.host
    port = port or cfg.port
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(man, cfg, token), name=APP, route_prefix="/")
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def stop() -> None:
    serve.delete(APP)
    serve.shutdown()
