"""Constrained RL's specification from the config (issue 22): which per-principle proxy a
constrained trial maximizes, which it constrains, and the constraints' unit -- the proxy's s.d. on
SFT samples, or its own proxy point read from a finished run (Moskovitz et al. 2024: the proxy value
at which that principle's gold peaks; here from its best-of-n curve).

The thresholds themselves need the SFT policy's scores, so the RL loop sets them at its step-0
evaluation (``orchestrator.run.rl_loop.RLRun.constraint_state``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from orchestrator.config.members import principle_size, principle_tag
from orchestrator.config.schema import ConfigError, FrontierConfig


def proxy_points(cfg: FrontierConfig) -> dict | None:
    """``pareto.constraint_base: frontier``: per principle, its proxy's best-of-n gain where that
    principle's gold peaks, from the finished run's frontier.json: at the peak KL of the curve's Gao
    fit (gold = d (alpha - beta d), d = sqrt(KL); the proxy's gain interpolated there between the
    measured n), or, without a fitted peak, at the n of the highest measured gold --
    {principle: {"proxy_point", "kl", "source": "fit" | "empirical", "peaked"}} (``peaked`` false:
    the peak lies past the largest n, so the point is the last measured one, a lower bound). None
    with ``reference``."""
    if cfg.pareto.constraint_base != "frontier":
        return None
    path = Path(cfg.pareto.constraint_frontier).expanduser()
    path = path / "frontier.json" if path.is_dir() else path
    key = "pareto.constraint_frontier"
    try:
        bon = json.loads(path.read_text())["bon"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{key}: {path} is not a finished run's frontier.json ({e.__class__.__name__}: {e})") from None
    z, out = principle_size(cfg), {}
    for pr in cfg.proxy.principles:
        name = f"proxy-{z}{principle_tag(cfg, pr)}"
        curve = next((c for c in bon if isinstance(c, dict) and c.get("proxy") == name
                      and c.get("principle") == pr), None)
        if curve is None or not curve.get("points"):
            raise ConfigError(f"{key}: {path} has no best-of-n curve of {name} (a run with "
                              f"proxy.principles including {pr!r} and its size {z})")
        pts = curve["points"]
        kl, prox = np.array([p["kl"] for p in pts], float), np.array([p["proxy"] for p in pts], float)
        k = (curve.get("fit") or {}).get("kl_peak")
        if k is not None and np.isfinite(k) and k > 0:
            out[pr] = {"proxy_point": float(np.interp(k, kl, prox)), "kl": float(min(k, kl.max())), "source": "fit",
                       "peaked": bool(k <= kl.max())}
        else:
            i = int(np.argmax([p["gold"] for p in pts]))
            out[pr] = {"proxy_point": float(prox[i]), "kl": float(kl[i]), "source": "empirical",
                       "peaked": i < len(pts) - 1}
    return out


def constraint_spec(cfg: FrontierConfig, c: dict, points: dict | None, scales: list[float] | None = None) -> dict:
    """A constrained trial's ``RunSpec.constraints`` (members in ``proxy.principles``' order).
    ``scales``: each member's score scale in the RL run (``rl.normalize_proxies`` divides scores by
    their s.d. on the SFT pool): a proxy point, read in raw best-of-n units, is divided by it."""
    pr = list(cfg.proxy.principles)
    mx = None if c["maximize"] == "mean" else pr.index(c["maximize"])
    idx = [i for i in range(len(pr)) if i != mx]
    sc = scales or [1.0] * len(pr)
    unit = "sd" if points is None else [points[pr[i]]["proxy_point"] / sc[i] for i in idx]
    return {"maximize": mx, "constrained": idx, "names": [pr[i] for i in idx], "level": float(c["level"]),
            "unit": unit, "lr": cfg.pareto.multiplier_lr}
