"""The RL algorithms as advantage functions, one per algorithm (the RL-loop issue: variants are
separate functions, not branches in the loop). Each maps (score [b], kl_tokens [b, t], beta, old,
batch, cfg) to the ``PolicyLearner`` method that applies it and that method's keyword arguments."""

from __future__ import annotations

import torch

from orchestrator.config.schema import RLConfig
from orchestrator.data.batch import RolloutBatch
from orchestrator.math import rl as R


def advantages_ppo(score, kl_tok, beta, old, batch: RolloutBatch, cfg: RLConfig):
    """GAE over per-token rewards (score at the last token, -beta * KL on every token)."""
    mask = batch.response_mask.float()
    rewards = R.token_rewards(score, kl_tok, mask, beta)
    adv, ret = R.gae(rewards, old["values"], mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        adv = R.whiten(adv, mask)
    return "update_ppo", {"advantages": adv, "returns": ret}


def _sequence_rewards(score, kl_tok, beta):
    return score - beta * kl_tok.sum(1)


def advantages_rloo(score, kl_tok, beta, old, batch: RolloutBatch, cfg: RLConfig):
    """Leave-one-out baseline over each prompt's responses; the KL penalty is part of the
    sequence reward (Ahmadian et al. 2024)."""
    adv = R.rloo_advantages(_sequence_rewards(score, kl_tok, beta), torch.tensor(batch.prompt_index, dtype=torch.long))
    if cfg.whiten_advantages:
        adv = R.whiten(adv)
    return "update_pg", {"advantages": adv}


def advantages_grpo(score, kl_tok, beta, old, batch: RolloutBatch, cfg: RLConfig):
    """Group-normalized advantages (Shao et al. 2024); here the KL penalty sits in the reward."""
    adv = R.grpo_advantages(_sequence_rewards(score, kl_tok, beta), torch.tensor(batch.prompt_index, dtype=torch.long))
    return "update_pg", {"advantages": adv}


ALGORITHMS = {"ppo": advantages_ppo, "rloo": advantages_rloo, "grpo": advantages_grpo}
