"""Length control of a reward model's Bradley-Terry training (``proxy.length_control``, issue 21):
the length-only logistic fit ``regress`` holds fixed, and ODIN's second head (``head``). Used by
``actors.reward_ensemble.RewardEnsemble.train``."""

from __future__ import annotations

import numpy as np
import torch

from orchestrator.math.calibration import bradley_terry_loss


def fit_length_beta(dlen: np.ndarray, p_a: np.ndarray, ridge: float = 1e-3, iters: int = 50) -> float:
    """The coefficient of a logistic regression of soft labels ``p_a`` on length differences alone,
    P(a preferred) = sigma(beta (len(a) - len(b))), by Newton's method with a small ridge penalty
    (``ridge`` x pairs x beta^2 / 2: finite when length separates the labels)."""
    x, p = np.asarray(dlen, float), np.asarray(p_a, float)
    if not len(x) or not np.any(x):
        return 0.0
    beta, lam = 0.0, ridge * len(x)
    for _ in range(iters):
        s = 0.5 * (1.0 + np.tanh(0.5 * beta * x))
        grad = float(((s - p) * x).sum() + lam * beta)
        hess = float((s * (1 - s) * x * x).sum() + lam)
        step = grad / hess
        beta -= step
        if abs(step) < 1e-10:
            break
    return float(beta)


def _resize_score(model, outputs: int) -> None:
    """``model.score`` replaced by a bias-matching Linear with ``outputs`` rows whose first row is the
    old first row (the quality score); new rows (and biases) start at zero."""
    head = model.score
    new = torch.nn.Linear(head.in_features, outputs, bias=head.bias is not None).to(head.weight.device)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[0] = head.weight[0]
        if head.bias is not None:
            new.bias.zero_()
            new.bias[0] = head.bias[0]
    model.score = new
    model.config.num_labels = outputs


def _pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xc, yc = x - x.mean(), y - y.mean()
    return (xc * yc).sum() / (xc.norm() * yc.norm()).clamp_min(1e-8)


class LengthControl:
    """The Bradley-Terry loss of one training step under ``proxy.length_control`` (issue 21).

    * ``none``: -log sigma(r(a) - r(b)) (soft labels as ``bradley_terry_loss``).
    * ``regress``: the logit r(a) - r(b) + beta (len(a) - len(b)), beta fitted first -- a logistic
      regression of the training labels on the length difference alone (``fit_length_beta``) -- and
      held fixed while r trains: the part of the labels that length explains is attributed to length,
      r learns the rest (fitted jointly, r and beta are interchangeable and r takes length as readily:
      on length-only labels a jointly learned beta left r's rank correlation with length at 0.96).
      beta is reported and dropped at scoring (the length term zeroed, as length-controlled
      AlpacaEval does at evaluation; Dubois et al. 2024).
    * ``head``: ODIN (Chen et al. 2024, "ODIN: disentangled reward mitigates hacking in RLHF"):
      the model's score layer gets a second output, the length head r_L; the pair logit uses
      r_Q + r_L; plus lambda * (-rho(r_L, len) + |rho(r_Q, len)| + |cos(w_Q, w_L)|), rho Pearson's
      over the step's sequences. ``finish`` cuts the layer back to the quality head r_Q alone, so the
      saved model is an ordinary one-label reward model. The pull on the length head is signed, as
      published (longer scores higher on it); on the default's labels, which prefer shorter responses,
      a sign-free pull (-|rho|) gave the same quality head (held-out accuracy 0.549 vs 0.558, 2x16).
    """

    def __init__(self, mode: str, model, lam: float, lens: torch.Tensor, pairs: tuple = ()):
        """``pairs``: (a, b, p_a) of the training pairs (indices into ``lens``), for ``regress``'s beta."""
        self.mode, self.model, self.lam, self.lens = mode, model, lam, lens
        self.beta = None
        if mode == "regress":
            a, b, p = pairs
            self.beta = torch.tensor([fit_length_beta((lens[torch.as_tensor(a)] - lens[torch.as_tensor(b)]).numpy(),
                                                     np.asarray(p, float))])
        self.heads = 2 if mode == "head" else 1
        self.rho: list[tuple[float, float]] = []
        if mode == "head":
            head = getattr(model, "score", None)
            if not isinstance(head, torch.nn.Linear) or head.out_features != 1:
                raise ValueError(f"proxy.length_control head needs a sequence-classification model whose score "
                                 f"layer is model.score (Linear, 1 output); {type(model).__name__} has "
                                 f"{type(head).__name__}")
            _resize_score(model, 2)
            with torch.no_grad():  # the length head: the score's weights permuted (same scale, another direction)
                model.score.weight[1] = head.weight[0][torch.randperm(head.in_features)]
        elif mode not in ("none", "regress"):
            raise ValueError(f"length_control {mode!r}: none, regress or head")

    def loss(self, r: torch.Tensor, ia: torch.Tensor, ib: torch.Tensor, p_a: torch.Tensor, uniq: list[int]):
        dev = r.device
        ia, ib, p_a = ia.to(dev), ib.to(dev), p_a.to(dev)
        if self.mode == "none":
            s = r[:, 0]
            return bradley_terry_loss(s[ia], s[ib], p_a)
        ln = self.lens[uniq].to(dev)
        if self.mode == "regress":
            s = r[:, 0] + self.beta.to(dev) * ln
            return bradley_terry_loss(s[ia], s[ib], p_a)
        rq, rl = r[:, 0], r[:, 1]
        s = rq + rl
        bt = bradley_terry_loss(s[ia], s[ib], p_a)
        if len(uniq) < 3 or float(ln.std()) == 0.0:  # no length variation in the step: nothing to disentangle
            return bt
        rho_l, rho_q = _pearson(rl, ln), _pearson(rq, ln)
        w = self.model.score.weight
        cos = (w[0] * w[1]).sum() / (w[0].norm() * w[1].norm()).clamp_min(1e-8)
        self.rho.append((float(rho_l.detach()), float(rho_q.detach())))
        return bt + self.lam * (-rho_l + rho_q.abs() + cos.abs().to(dev))

    def finish(self) -> dict:
        """The stats of the run, and the model back to one output where a length head was trained."""
        if self.mode == "regress":
            return {"length_beta": float(self.beta.detach())}
        if self.mode == "head":
            _resize_score(self.model, 1)
            last = self.rho[-20:]
            return {"length_head_rho": float(np.mean([x[0] for x in last])) if last else None,
                    "quality_head_rho": float(np.mean([x[1] for x in last])) if last else None}
        return {}
