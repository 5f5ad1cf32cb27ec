"""The reward service (``cluster.serve``): where ``python -m jobs.serve`` listens, how it batches,
when it sheds load, and each served model's replicas (``orchestrator.run.rm_server``, issue 23)."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.config.loading import _check

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ModelServing:
    """Replicas and resources of one served reward model (a Serve deployment of its own)."""

    replicas: int = 1
    """Replicas at start (the fixed count without autoscaling)."""
    max_replicas: int = 0
    """Autoscaling: > ``replicas`` lets Serve add replicas up to this many while each holds more than
    ``target_ongoing_requests`` (and remove them down to ``replicas``); 0 = a fixed count."""
    target_ongoing_requests: float = 2.0
    """Autoscaling's target of requests in flight per replica."""
    num_cpus: float = 0.1
    """CPUs per replica (Ray's logical share; fractions allowed); torch threads = max(1, floor(num_cpus))."""
    num_gpus: float = 0.0
    """GPUs per replica (the model scores on ``cuda`` when > 0)."""

    def __post_init__(self):
        _check(self.replicas >= 1, "replicas", f"{self.replicas} must be >= 1")
        _check(self.max_replicas == 0 or self.max_replicas >= self.replicas, "max_replicas",
               f"{self.max_replicas} must be 0 (no autoscaling) or >= replicas ({self.replicas})")
        _check(self.target_ongoing_requests > 0, "target_ongoing_requests", "must be > 0")
        _check(self.num_cpus > 0, "num_cpus", f"{self.num_cpus} must be > 0")
        _check(self.num_gpus >= 0, "num_gpus", f"{self.num_gpus} must be >= 0")

    def deployment_options(self) -> dict:
        """``Deployment.options`` of this model's deployment: a fixed replica count or autoscaling."""
        opts: dict = {"ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}}
        if self.max_replicas > self.replicas:
            opts["autoscaling_config"] = {"min_replicas": self.replicas, "initial_replicas": self.replicas,
                                          "max_replicas": self.max_replicas,
                                          "target_ongoing_requests": self.target_ongoing_requests}
        else:
            opts["num_replicas"] = self.replicas
        return opts


@dataclass(frozen=True)
class ServeConfig:
    """``python -m jobs.serve``: a finished run's proxies and gold members over HTTP."""

    host: str = "127.0.0.1"
    """Address the HTTP endpoint binds to. Anything but loopback requires a token (``token_env``)."""
    port: int = 8000
    """HTTP port (``jobs.serve --port`` overrides it)."""
    token_env: str = "RLHF_FRONTIER_SERVE_TOKEN"
    """The environment variable holding the bearer token clients must send (``Authorization: Bearer
    ...``). Required when ``host`` is not loopback; used on loopback too when set. Only its SHA-256
    leaves the starting process."""
    max_batch_rows: int = 64
    """Rows one forward batch of a model gathers from concurrent requests (``serve.batch``, counted
    in rows); a request with more rows is split into pieces of this size."""
    batch_wait_ms: float = 5.0
    """How long a model's batch waits for more requests before it runs."""
    max_ongoing_requests: int = 16
    """Score requests the HTTP entry point works on at once (per entry replica)."""
    max_queued_requests: int = 64
    """Score requests waiting beyond those (per entry replica); more are refused at once with 503
    and ``Retry-After``."""
    retry_after_s: int = 1
    """The ``Retry-After`` of a 503 (seconds)."""
    max_rows: int = 1024
    """Rows (prompt, response pairs) one request may hold (400 beyond)."""
    max_chars: int = 8000
    """Characters one prompt or response may hold (400 beyond)."""
    entry: ModelServing = field(default_factory=lambda: ModelServing(1, 0, 2.0, 0.1))
    """The HTTP entry point's deployment (parses, validates, fans out to the models)."""
    models: dict[str, ModelServing] = field(default_factory=dict)
    """Replicas and resources per served model by name (``GET /v1/models`` lists them); ``"*"``
    applies to every model not named. Default: one replica of 0.1 CPU each."""

    def __post_init__(self):
        _check(1 <= self.port <= 65535, "port", f"{self.port} must be in [1, 65535]")
        _check(bool(self.token_env), "token_env", "must name an environment variable")
        _check(self.max_batch_rows >= 1, "max_batch_rows", f"{self.max_batch_rows} must be >= 1")
        _check(self.batch_wait_ms >= 0, "batch_wait_ms", "must be >= 0")
        _check(self.max_ongoing_requests >= 1, "max_ongoing_requests", "must be >= 1")
        _check(self.max_queued_requests >= 1, "max_queued_requests", "must be >= 1 (beyond: 503)")
        _check(self.retry_after_s >= 1, "retry_after_s", "must be >= 1")
        _check(self.max_rows >= 1, "max_rows", "must be >= 1")
        _check(self.max_chars >= 1, "max_chars", "must be >= 1")

    def model(self, name: str) -> ModelServing:
        """The serving settings of model ``name``."""
        return self.models.get(name) or self.models.get("*") or ModelServing()

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK
