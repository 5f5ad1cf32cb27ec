"""Actors on a real local Ray with tiny models built from config."""

import random

import numpy as np
import pytest
import ray
import torch

from actors.policy_learner import PolicyLearner
from actors.reward_ensemble import RewardEnsemble
from actors.rollout_generator import RolloutGenerator
from orchestrator.config.schema import RoleResources
from orchestrator.data.tasks import synthetic as T
from orchestrator.nn.models import train_tokenizer
from orchestrator.run.actor_group import ActorGroup


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("policy")
    train_tokenizer(T.corpus(0, 300), d / "tok")
    learner = PolicyLearner(str(d / "tok"), {"size": "1x32", "n_head": 4, "n_positions": 72}, seed=0)
    rows = T.make_prompts(200, 1)
    rng = random.Random(0)
    stats = learner.sft([(r["prompt"], T.make_demonstration(r["family"], r["meta"], rng)) for r in rows],
                        steps=15, sequences_per_step=16, lr=3e-3)
    assert stats["loss_last"] < stats["loss_first"]  # SFT learns
    learner.save(str(d / "policy"))
    return d


def test_generator_actor_is_seeded_and_keeps_logprobs(ray_session, policy_dir):
    gen = ActorGroup(RolloutGenerator, RoleResources(2, 0.5), str(policy_dir / "policy"))
    prompts = [r["prompt"] for r in T.make_prompts(3, 2)]
    a, b, c = ray.get([gen.actors[0].generate.remote(prompts, 4, 11, 16, 1.0, True),
                       gen.actors[1].generate.remote(prompts, 4, 11, 16, 1.0, True),
                       gen.actors[0].generate.remote(prompts, 4, 12, 16, 1.0, True)])
    gen.shutdown()
    assert a.texts == b.texts  # same seed, other replica: same samples
    assert a.texts != c.texts
    assert a.response_ids.shape == a.logprobs.shape == a.response_mask.shape
    assert len(a) == 12 and list(a.prompt_index) == [0] * 4 + [1] * 4 + [2] * 4
    m = a.response_mask.bool()
    assert torch.all(a.logprobs[m] <= 0) and torch.all(a.logprobs[~m] == 0)
    # the reference is the same network before any update: logprobs agree
    assert torch.allclose(a.ref_logprobs, a.logprobs, atol=1e-4)


def test_compaction_does_not_change_samples(policy_dir):
    from transformers import AutoModelForCausalLM

    from orchestrator.nn.models import encode_prompt, load_tokenizer
    from orchestrator.nn.sampling import sample

    tok = load_tokenizer(policy_dir / "policy")
    model = AutoModelForCausalLM.from_pretrained(policy_dir / "policy").eval()
    rows = [encode_prompt(tok, r["prompt"]) for r in T.make_prompts(6, 3) for _ in range(5)]
    out = [sample(model, rows, 20, 1.0, tok.eos_token_id, tok.pad_token_id, torch.Generator().manual_seed(5),
                  compact_below=c) for c in (0.0, 0.99)]
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])
    assert torch.allclose(out[0][2], out[1][2], atol=1e-5)


def test_proxy_ensemble_learns_gold_preferences(ray_session, policy_dir):
    rng = random.Random(0)
    rows = T.make_prompts(300, 4, families=("arith", "unsafe", "chat"))
    texts, a, b, p, group = [], [], [], [], []
    for i, r in enumerate(rows):
        resp = [T.make_demonstration(r["family"], r["meta"], rng) for _ in range(4)]
        gold = [T.oracle(r["family"], r["meta"], x)["gold"] for x in resp]
        base = len(texts)
        texts += [(r["prompt"], x) for x in resp]
        for x in range(4):
            for y in range(x + 1, 4):
                if gold[x] != gold[y]:
                    a.append(base + x), b.append(base + y), p.append(float(gold[x] > gold[y])), group.append(i)
    val = [g >= 250 for g in group]
    data = {"texts": texts, "a": a, "b": b, "p_a": p, "group": group, "val": val}
    grp = ActorGroup(RewardEnsemble, RoleResources(1, 1.0), "proxy",
                     [{"name": "rm-a", "kind": "hf", "size": "1x16", "seed": 1},
                      {"name": "rm-b", "kind": "hf", "size": "2x16", "seed": 2}], str(policy_dir / "tok"))
    stats = ray.get(grp.one("train", data, 4, 16, 3e-3, 0))
    scores = ray.get(grp.one("score", {"prompt": [t[0] for t in texts[:8]], "response": [t[1] for t in texts[:8]]}))
    grp.shutdown()
    assert set(stats) == {"rm-a", "rm-b"}
    for s in stats.values():
        assert s["val_accuracy"] > 0.6, stats  # chance is 0.5
    assert scores.values.shape == (8, 2) and scores.members == ("rm-a", "rm-b")


def test_a_resampled_prompt_is_a_draw_of_its_own_with_draws(ray_session, policy_dir):
    """member_pairs that repeat every training pair: by default a repeat weighs twice in its prompt's
    step (as many steps as prompts); with ``draws`` each copy is a prompt of its own (twice the steps,
    as bagging takes them)."""
    rng = random.Random(0)
    rows = T.make_prompts(64, 4, families=("arith", "chat"))
    texts, a, b, p, group = [], [], [], [], []
    for i, r in enumerate(rows):
        resp = [T.make_demonstration(r["family"], r["meta"], rng) for _ in range(3)]
        texts += [(r["prompt"], x) for x in resp]
        a += [3 * i, 3 * i + 1]
        b += [3 * i + 1, 3 * i + 2]
        p += [1.0, 0.0]
        group += [i, i]
    data = {"texts": texts, "a": a, "b": b, "p_a": p, "group": group, "val": [False] * len(a)}
    twice = [list(range(len(a))) * 2]
    steps = {}
    for draws in (False, True):
        grp = ActorGroup(RewardEnsemble, RoleResources(1, 1.0), "proxy",
                         [{"name": "rm", "kind": "hf", "size": "1x8", "seed": 1}], str(policy_dir / "tok"))
        steps[draws] = ray.get(grp.one("train", data, 1, 8, 1e-3, 0, member_pairs=twice, draws=draws))["rm"]["steps"]
        grp.shutdown()
    assert steps == {False: 64 // 8, True: 2 * 64 // 8}


def test_gold_ensemble_scores_principles(ray_session):
    grp = ActorGroup(RewardEnsemble, RoleResources(1, 0.5), "gold", [{"name": "oracle", "kind": "oracle"}])
    rows = {"prompt": ["what is 3 plus 4 ?"] * 2, "response": ["3 plus 4 is 7 .", "3 plus 4 is 9 ."],
            "family": ["arith"] * 2, "meta": ['{"a": 3, "b": 4}'] * 2}
    sc = ray.get(grp.one("score", rows))
    grp.shutdown()
    assert sc.values.shape == (2, 1) and sc.values[0, 0] > sc.values[1, 0]
    assert set(sc.principles) == set(T.PRINCIPLES)
    total = sum(sc.principles[p] for p in T.PRINCIPLES)
    assert np.allclose(total, sc.values[:, 0])


def test_role_is_checked():
    with pytest.raises(ValueError, match="role"):
        RewardEnsemble("judge", [{"name": "oracle", "kind": "oracle"}])


def test_fast_gpt2_decoder_matches_transformers(policy_dir):
    """The plain-torch GPT-2 decoder gives the HF model's logits (prefill and cached steps, with
    left padding and compaction) and therefore the same samples."""
    from transformers import AutoModelForCausalLM

    from orchestrator.nn.models import encode_prompt, load_tokenizer
    from orchestrator.nn.sampling import GPT2Decoder, HFDecoder, left_pad, sample

    tok = load_tokenizer(policy_dir / "policy")
    model = AutoModelForCausalLM.from_pretrained(policy_dir / "policy").eval()
    assert GPT2Decoder.supports(model)
    rows = [encode_prompt(tok, r["prompt"]) for r in T.make_prompts(6, 4)]
    ids, attn = left_pad(rows, tok.pad_token_id)
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        hf, fast = HFDecoder(model), GPT2Decoder(model, ids.shape[1] + 4)
        (a, pa), (b, pb) = hf.prefill(ids, attn, pos), fast.prefill(ids, attn, pos)
        assert torch.allclose(a, b, atol=1e-4)
        tok_ = a.argmax(-1)
        for _ in range(3):
            attn = torch.cat([attn, torch.ones(len(rows), 1, dtype=attn.dtype)], 1)
            pos = pos[:, -1:] + 1
            (a, pa), (b, pb) = hf.step(tok_, attn, pos, pa), fast.step(tok_, attn, pos, pb)
            assert torch.allclose(a, b, atol=1e-4)
            tok_ = a.argmax(-1)
    many = rows * 8
    outs = [sample(model, many, 20, 1.0, tok.eos_token_id, tok.pad_token_id, torch.Generator().manual_seed(3),
                   fast=f) for f in (False, True)]
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert torch.allclose(outs[0][2], outs[1][2], atol=1e-4)


def test_plain_gpt2_forward_matches_transformers(policy_dir):
    """``response_forward``'s plain-op GPT-2 pass (learner and reference) equals the HF forward:
    log-probs, logits and final hidden states to float rounding, and the same gradients."""
    from transformers import AutoModelForCausalLM

    from orchestrator.nn.models import encode_prompt, load_tokenizer
    from orchestrator.nn.sampling import left_pad, response_forward, sample

    tok = load_tokenizer(policy_dir / "policy")
    model = AutoModelForCausalLM.from_pretrained(policy_dir / "policy").train()
    rows = [encode_prompt(tok, r["prompt"]) for r in T.make_prompts(8, 5)]
    ids, mask, _ = sample(model, rows, 12, 1.0, tok.eos_token_id, tok.pad_token_id, torch.Generator().manual_seed(1))
    for i, n in enumerate([12, 3, 7, 1, 12, 5, 9, 2]):  # right padding of different lengths
        mask[i, n:] = 0
        ids[i, n:] = tok.pad_token_id

    def hf_forward():
        p_ids, p_mask = left_pad(rows, tok.pad_token_id)
        all_ids, attn = torch.cat([p_ids, ids], 1), torch.cat([p_mask, mask.to(p_mask.dtype)], 1)
        out = model(input_ids=all_ids, attention_mask=attn, position_ids=(attn.cumsum(1) - 1).clamp(min=0),
                    output_hidden_states=True)
        p, t = p_ids.shape[1], ids.shape[1]
        logits = out.logits[:, p - 1: p + t - 1].float()
        lp = torch.log_softmax(logits, -1).gather(2, ids[:, :, None]).squeeze(2) * mask
        return lp, logits, out.hidden_states[-1][:, p - 1: p + t - 1]

    results = []
    for fn in (hf_forward, lambda: response_forward(model, rows, ids, mask, tok.pad_token_id, hidden=True)):
        model.zero_grad()
        lp, logits, h = fn()
        (lp.sum() + h[mask.bool()].square().mean()).backward()
        results.append((lp.detach(), logits.detach(), h.detach(),
                        [q.grad.clone() for q in model.parameters() if q.grad is not None]))
    (a_lp, a_lg, a_h, a_g), (b_lp, b_lg, b_h, b_g) = results
    m = mask.bool()
    assert torch.allclose(a_lp, b_lp, atol=1e-4)
    assert torch.allclose(a_lg[m], b_lg[m], atol=1e-4) and torch.allclose(a_h[m], b_h[m], atol=1e-4)
    assert len(a_g) == len(b_g) and all(torch.allclose(x, y, atol=1e-4, rtol=1e-3) for x, y in zip(a_g, b_g))
