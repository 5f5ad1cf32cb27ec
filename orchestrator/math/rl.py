"""The RL loop's math as pure torch functions (no Ray, no models): KL estimators, the adaptive KL
controller, proxy-ensemble objectives, reward shaping, advantages and the clipped losses.

Shapes: ``[b, t]`` per-token tensors over response tokens with a ``[b, t]`` mask (1 = real token);
``[b]`` per-sequence tensors; ``[b, k]`` member scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# --------------------------------------------------------------------------------------------
# KL estimators (Schulman 2020, "Approximating KL Divergence"); x ~ pi, r = pi_ref(x) / pi(x)


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k1 = log pi - log pi_ref = -log r: unbiased for KL(pi || pi_ref), high variance, can be < 0."""
    return logp - ref_logp


def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k2 = (log r)^2 / 2: biased, low variance, >= 0; its expectation is an f-divergence that
    matches KL to second order when pi and pi_ref are close (Schulman 2020)."""
    return 0.5 * (logp - ref_logp) ** 2


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 = (r - 1) - log r: unbiased for KL(pi || pi_ref) and >= 0 (Schulman 2020)."""
    log_r = ref_logp - logp
    return torch.expm1(log_r) - log_r


KL_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def sequence_kl(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """``[b]`` per-sequence KL in nats: the per-token estimator summed over response tokens."""
    return (KL_ESTIMATORS[estimator](logp, ref_logp) * mask).sum(1)


@dataclass
class KLController:
    """The KL coefficient beta: fixed (``target == 0``) or adaptive (Ziegler et al. 2019, sec. 2.2):
    e = clip((KL - target) / target, -0.2, 0.2);  beta <- beta * (1 + e * n_steps / horizon),
    with KL the mean per-sequence KL of the step and ``n_steps`` the sequences it covered."""

    beta: float
    target: float = 0.0
    horizon: int = 10000

    def update(self, kl: float, n_steps: int) -> float:
        if self.target > 0:
            e = min(max((kl - self.target) / self.target, -0.2), 0.2)
            self.beta *= 1 + e * n_steps / self.horizon
        return self.beta

    def state_dict(self) -> dict:
        return {"beta": self.beta, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, s: dict) -> None:
        self.beta, self.target, self.horizon = float(s["beta"]), float(s["target"]), int(s["horizon"])


# --------------------------------------------------------------------------------------------
# proxy ensembles (Coste et al. 2023; Eisenstein et al. 2023)


def weighted_objective(weights) -> str:
    """The objective name of fixed principle weights: ``weighted:0.5,0.25,0.25,0``."""
    return "weighted:" + ",".join(f"{float(w):g}" for w in weights)


def principle_weights(objective: str) -> list[float]:
    """The weights of a ``weighted:`` objective."""
    return [float(x) for x in objective.removeprefix("weighted:").split(",")]


def family_objective(weights: dict) -> str:
    """The objective name of per-family principle weights (issue 22): ``family:*=0.25,...;unsafe=...``
    -- ``*`` is every family not named. Families sorted, so equal weights make equal names."""
    return "family:" + ";".join(f"{f}={','.join(f'{float(w):g}' for w in ws)}" for f, ws in sorted(weights.items()))


def family_weights(objective: str) -> dict[str, list[float]]:
    """The weights of a ``family:`` objective, by family."""
    out = {}
    for part in objective.removeprefix("family:").split(";"):
        f, ws = part.split("=", 1)
        out[f] = [float(x) for x in ws.split(",")]
    return out


def constrained_objective(maximize: int | None) -> str:
    """The objective of a constrained run (issue 22): ``constrained:<i>`` maximizes member i, and
    ``constrained:mean`` the members' mean; the Lagrange terms of the constrained members are added
    by the RL loop (``orchestrator.math.pareto.lagrangian_reward``), since they carry state."""
    return f"constrained:{'mean' if maximize is None else int(maximize)}"


def aggregate(values: torch.Tensor, objective: str, uwo_lambda: float = 0.1, families=None) -> torch.Tensor:
    """``[b, k]`` member scores -> ``[b]`` reward.

    mean: (1/k) sum_i R_i;  wco (worst case): min_i R_i;  uwo (uncertainty weighted):
    mean - lambda * (1/k) sum_i (R_i - mean)^2  (Coste et al. 2023, eqs. 2-4);
    ``weighted:w_1,...,w_k``: sum_i w_i R_i (per-principle proxies under fixed weights; issue 22);
    ``family:f=w..;*=w..``: sum_i w_{f(x),i} R_i with the weights of each row's prompt family
    (``families``: [b] family names; task-dependent weights);
    ``constrained:i`` / ``constrained:mean``: the constrained run's objective term alone (member i,
    or the mean) -- what its evaluations report as the proxy."""
    if objective.startswith("weighted:"):
        w = principle_weights(objective)
        if len(w) != values.shape[1]:
            raise ValueError(f"objective {objective!r}: {len(w)} weights for {values.shape[1]} members")
        return values @ torch.tensor(w, dtype=values.dtype)
    if objective.startswith("family:"):
        by = family_weights(objective)
        if families is None or len(families) != values.shape[0]:
            raise ValueError(f"objective {objective!r} needs each row's prompt family")
        if any(len(w) != values.shape[1] for w in by.values()):
            raise ValueError(f"objective {objective!r}: every family needs {values.shape[1]} weights")
        missing = sorted({f for f in families if f not in by} - {"*"}) if "*" not in by else []
        if missing:
            raise ValueError(f"objective {objective!r}: no weights for families {missing} (and no '*')")
        W = torch.tensor([by.get(f, by.get("*")) for f in families], dtype=values.dtype)
        return (values * W).sum(1)
    if objective.startswith("constrained:"):
        which = objective.removeprefix("constrained:")
        return values.mean(1) if which == "mean" else values[:, int(which)]
    if objective == "mean":
        return values.mean(1)
    if objective == "wco":
        return values.min(1).values
    if objective == "uwo":
        mean = values.mean(1)
        return mean - uwo_lambda * ((values - mean[:, None]) ** 2).mean(1)
    raise ValueError(f"unknown ensemble objective {objective!r} (mean, wco, uwo)")


# --------------------------------------------------------------------------------------------
# reward shaping and advantages


def token_rewards(score: torch.Tensor, kl_tokens: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """``[b, t]`` per-token rewards: -beta * KL estimate on every response token, plus the sequence
    score on its last token (Ziegler et al. 2019; Stiennon et al. 2020)."""
    r = -beta * kl_tokens * mask
    last = (mask.sum(1) - 1).clamp(min=0).long()
    r[torch.arange(len(score)), last] += score.to(r.dtype)
    return r


def whiten(x: torch.Tensor, mask: torch.Tensor | None = None, shift_mean: bool = True) -> torch.Tensor:
    """Normalize to unit variance (and zero mean) over the masked entries."""
    if mask is None:
        mean, var = x.mean(), x.var(unbiased=False)
    else:
        n = mask.sum().clamp(min=1)
        mean = (x * mask).sum() / n
        var = (((x - mean) * mask) ** 2).sum() / n
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out if mask is None else out * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016) over right-padded responses; the
    value after the last token is 0. Returns ``(advantages, returns)``, both ``[b, t]``, 0 at padding."""
    b, t = rewards.shape
    adv = torch.zeros_like(rewards)
    last = torch.zeros(b, dtype=rewards.dtype)
    for j in reversed(range(t)):
        next_v = values[:, j + 1] * mask[:, j + 1] if j + 1 < t else torch.zeros(b, dtype=rewards.dtype)
        delta = rewards[:, j] + gamma * next_v - values[:, j]
        last = (delta + gamma * lam * last) * mask[:, j]
        adv[:, j] = last
    return adv, (adv + values) * mask


def rloo_advantages(seq_rewards: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024): each sample's baseline is the
    mean reward of the *other* samples of its prompt. ``group``: ``[b]`` prompt index, k >= 2 each."""
    sums = torch.zeros(int(group.max()) + 1, dtype=seq_rewards.dtype).index_add_(0, group, seq_rewards)
    counts = torch.bincount(group).to(seq_rewards.dtype)
    k = counts[group]
    return seq_rewards - (sums[group] - seq_rewards) / (k - 1)


def grpo_advantages(seq_rewards: torch.Tensor, group: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Group-relative advantages (Shao et al. 2024, GRPO): (R - mean_group) / (std_group + eps)."""
    n = int(group.max()) + 1
    counts = torch.bincount(group, minlength=n).to(seq_rewards.dtype)
    mean = torch.zeros(n, dtype=seq_rewards.dtype).index_add_(0, group, seq_rewards) / counts
    var = torch.zeros(n, dtype=seq_rewards.dtype).index_add_(0, group, (seq_rewards - mean[group]) ** 2) / counts
    return (seq_rewards - mean[group]) / (var.sqrt()[group] + eps)


# --------------------------------------------------------------------------------------------
# losses


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def clipped_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                        clip: float) -> tuple[torch.Tensor, dict]:
    """PPO's clipped surrogate (Schulman et al. 2017), token-level mean. Returns (loss, stats)."""
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip))
    with torch.no_grad():
        stats = {"clipfrac": float(masked_mean((torch.abs(ratio - 1) > clip).float(), mask)),
                 "approx_kl": float(masked_mean(torch.expm1(log_ratio) - log_ratio, mask))}
    return masked_mean(loss, mask), stats


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor, clip: float) -> torch.Tensor:
    """PPO's clipped value loss: 0.5 * max((V - R)^2, (clip(V, V_old +- c) - R)^2)."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), -1)
    return -(logp.exp() * logp).sum(-1)


def gaussian_kl(mu1: float, s1: float, mu2: float, s2: float) -> float:
    """KL(N(mu1, s1^2) || N(mu2, s2^2)) in closed form (for testing the estimators)."""
    return math.log(s2 / s1) + (s1 ** 2 + (mu1 - mu2) ** 2) / (2 * s2 ** 2) - 0.5
