"""An RL run's proxy and gold scoring through the reward service (``cluster.rl.reward_service:
serve``, issue 23): ``ServiceScorer`` stands where the role's ``ActorGroup`` stood for its scoring
calls (``score``, ``score_rollouts``) and hands every other call (the monitor's ``features``,
``set_monitors``) to the role's actor. The service's scores are the in-process ones bit for bit
(batch-invariant passes, the same torch threads), so a run ends with the same weights and
metrics; gold comes back as plain numbers and is sealed here, on the RL side, as the gold actor
seals it (``orchestrator.data.batch.seal``)."""

from __future__ import annotations

import numpy as np
import ray

from actors.reward_ensemble import rollout_rows
from orchestrator.data.batch import Scores, seal
from orchestrator.run.actor_group import Ready

SCORING = ("score", "score_rollouts")


def _rows(method: str, args: tuple) -> dict:
    return rollout_rows(*args) if method == "score_rollouts" else args[0]


def score_via_service(app: str, names: list[str], method: str, *args, sealed: bool = False) -> Scores:
    """``RewardEnsemble.<method>(*args)``'s ``Scores`` of members ``names``, from the service ``app``."""
    from ray import serve

    out = serve.get_app_handle(app).score_rows.remote(_rows(method, args), list(names)).result()
    values = np.stack([np.asarray(out[n]["scores"], np.float64) for n in names], axis=1)
    principles: dict = {}
    for n in names:  # in member order, as one ensemble fills them
        principles.update({p: np.asarray(v, np.float64) for p, v in out[n]["principles"].items()})
    sc = Scores(values=values, members=tuple(names), principles=principles)
    return seal(sc) if sealed else sc


_remote_score = ray.remote(num_cpus=0, max_retries=0)(score_via_service)


class ServiceScorer:
    """A role's scoring calls through the service ``app``; its other calls to ``group``."""

    def __init__(self, app: str, group, members: list[dict], local: bool):
        self.app, self.group, self.local = app, group, local
        self.set_members(members)

    def set_members(self, members: list[dict]) -> None:
        """The members this role scores with; each must be served with the very same member dict
        (path, normalization): a ``ValueError`` naming the first that is not."""
        from ray import serve

        served = serve.get_app_handle(self.app).members.remote().result()
        for m in members:
            s = served.get(m["name"])
            if s is None:
                raise ValueError(f"reward service {self.app!r} does not serve {m['name']!r} "
                                 f"(it serves {', '.join(served)})")
            diff = sorted(k for k in set(s) | set(m) if s.get(k) != m.get(k))
            if diff:
                raise ValueError(f"reward service {self.app!r} serves {m['name']!r} with another {diff[0]} "
                                 f"({s.get(diff[0])!r}, the run's: {m.get(diff[0])!r})")
        self.names = [m["name"] for m in members]

    @property
    def actors(self) -> list:
        return self.group.actors

    def __len__(self) -> int:
        return len(self.group)

    def one(self, method: str, *args, **kwargs):
        if method not in SCORING:
            return self.group.one(method, *args, **kwargs)
        if self.local:  # eager, as a local ActorGroup: results passed on as arguments resolve
            args = tuple(a.value if isinstance(a, Ready) else a for a in args)
            return Ready(score_via_service(self.app, self.names, method, *args, **kwargs))
        return _remote_score.remote(self.app, self.names, method, *args, **kwargs)

    def all(self, method: str, *args, **kwargs) -> list:
        if method == "set_members":
            self.set_members(args[0])
        return self.group.all(method, *args, **kwargs)

    def shutdown(self) -> None:
        self.group.shutdown()


def deploy_for_rl(cfg, run_dir, task, proxies: list, calibration: dict | None, names: list[str] | None = None) -> str:
    """Deploy the run's models as the RL runs' reward service (no HTTP: handles only); returns the
    Serve application's name (``names``: only these models; default every model of the run). Each
    role scores as the runs' own ensembles would: ``cluster.rl``'s dtype, batch_tokens and torch
    threads (``RewardEnsemble.score`` sets its role's threads whichever process calls it)."""
    from pathlib import Path

    from ray import serve

    from orchestrator.config.schema import config_digest
    from orchestrator.run.rm_server import build_app
    from orchestrator.run.service import absolute, manifest

    res = cfg.cluster.rl
    man = absolute(manifest(cfg, Path(run_dir), task, proxies, calibration), Path(run_dir))
    if names is not None:
        man["models"] = [e for e in man["models"] if e["name"] in names]
    roles = {r: {"dtype": getattr(res, r).dtype, "batch_tokens": getattr(res, r).batch_tokens,
                 "threads": max(1, int(getattr(res, r).num_cpus))} for r in ("proxy", "gold")}
    app = f"rewards-rl-{config_digest(cfg)[:10]}"
    serve.start(proxy_location="Disabled")  # (a running Serve keeps its own settings)
    serve.run(build_app(man, cfg.cluster.serve, roles=roles), name=app, route_prefix=None)
    return app


def undeploy(app: str) -> None:
    from ray import serve

    serve.delete(app)
