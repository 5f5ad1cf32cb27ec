"""Bring your own models (issue 17): tiny random models of real architectures, saved to a temporary
directory by ``orchestrator.nn.tiny`` and loaded by path, each through its own tokenizer."""

import json
import random

import pytest
import torch

from orchestrator.nn import tiny
from orchestrator.nn.codec import Codec, CodecError, load_codec

ARCHS = ("gpt2", "llama", "qwen2", "gpt_neox")


@pytest.fixture(scope="module")
def models(tiny_models):
    """``tiny:`` references built into this module's own cache directory (nothing shared)."""
    return tiny_models


@pytest.mark.parametrize("arch", ARCHS)
def test_kv_cache_sampling_logprobs_equal_a_full_forward(models, arch):
    """Batched, left-padded generation with a KV cache through the architecture's own HF model
    gives per-token log-probs equal to one full forward pass over prompt + response (the function
    the learner and the reference use), and stops rows at the tokenizer's eos."""
    from transformers import AutoModelForCausalLM

    from orchestrator.data.tasks import synthetic as T
    from orchestrator.nn.sampling import response_logprobs, sample

    path = models(f"tiny:{arch}-2x32")
    codec = load_codec(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    assert model.config.model_type == arch
    prompts = [codec.prompt(r["prompt"]) for r in T.make_prompts(5, 3)]
    assert len({len(p) for p in prompts}) > 1  # rows of several lengths: left padding is exercised
    rows = [p for p in prompts for _ in range(3)]
    ids, mask, lps = sample(model, rows, 12, 1.0, codec.eos_id, codec.pad_id, torch.Generator().manual_seed(0))
    full = response_logprobs(model, rows, ids, mask, codec.pad_id)
    assert mask.sum() > len(rows)  # responses of more than one token
    assert torch.allclose(lps, full, atol=1e-5), (lps - full).abs().max()  # measured: 5e-7 on each
    assert torch.all(lps[mask.bool()] < 0) and torch.all(lps[~mask.bool()] == 0)
    for r, m in zip(ids, mask):  # nothing after eos
        n = int(m.sum())
        assert codec.eos_id not in r[: n - 1].tolist()


def test_each_tokenizer_brings_its_format(models):
    """Qwen2's chat template wraps the prompt as a user turn and a scored pair as a conversation;
    ``chat_template: none`` turns it off; Llama's tokenizer adds its BOS; GPT-2's, without a pad
    token, pads with eos; the synthetic task's tokenizer keeps ``[BOS] p [SEP] r [EOS]`` exactly."""
    from orchestrator.data.tasks import synthetic as T
    from orchestrator.nn.models import (
        encode_pair,
        encode_prompt,
        load_tokenizer,
        train_tokenizer,
    )

    q = load_codec(models("tiny:qwen2-2x32"))
    assert q.format == "chat"
    start = q.tok.convert_tokens_to_ids("<|im_start|>")
    assert q.prompt("hello !")[0] == start and q.prompt("hello !").count(start) == 2  # user turn + generation prompt
    assert q.score_input("hello !", "hi !").count(start) == 2 and q.score_input("hello !", "hi !")[-1] == q.eos_id
    plain = load_codec(models("tiny:qwen2-2x32"), chat_template="none")
    assert plain.format == "plain" and start not in plain.prompt("hello !")
    llama = load_codec(models("tiny:llama-2x32"))
    assert llama.prompt("hello !")[0] == llama.tok.bos_token_id
    gpt2 = load_codec(models("tiny:gpt2-2x32"))
    assert gpt2.tok.pad_token_id is None and gpt2.pad_id == gpt2.eos_id
    assert gpt2.decode([gpt2.response("the answer is 7 .")]) == ["the answer is 7 ."]

    d = models("tiny:prompts").rsplit("/", 1)[0] + "/task-tok"
    tok = train_tokenizer(T.corpus(0, 200), d)
    task = load_codec(d)
    assert task.format == "task"
    for r in T.make_prompts(20, 1):
        resp = T.make_demonstration(r["family"], r["meta"], random.Random(1))
        assert task.prompt(r["prompt"]) == encode_prompt(load_tokenizer(d), r["prompt"])
        assert task.score_input(r["prompt"], resp) == task.sequence(r["prompt"], resp) == encode_pair(tok, r["prompt"], resp)


def test_tokenizer_without_pad_or_eos_and_broken_template_are_refused(models):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    bare = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>")))
    with pytest.raises(CodecError, match="neither a pad nor an eos"):
        Codec(bare)
    q = load_codec(models("tiny:qwen2-2x32"))
    q.tok.chat_template = "{{ raise_exception('system turn required') }}"
    with pytest.raises(CodecError, match="chat template failed to render"):
        q.prompt("hello !")


def test_proxy_of_a_model_by_path_trains_saves_and_reloads_in_plain_transformers(models, tmp_path):
    """A proxy from a base model of another architecture and tokenizer than the policy: Bradley-Terry
    training through its own codec, saved as a one-label ``AutoModelForSequenceClassification`` that
    plain ``transformers`` loads and that scores exactly as the ensemble did; a gold member with a
    multi-label head is refused."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from actors.reward_ensemble import RewardEnsemble
    from orchestrator.data.tasks import synthetic as T

    rows = T.make_prompts(60, 2, families=("arith",))
    rng = random.Random(0)
    texts, a, b, p, group = [], [], [], [], []
    for i, r in enumerate(rows):
        x, y = (T.make_demonstration(r["family"], r["meta"], rng) for _ in range(2))
        texts += [(r["prompt"], x), (r["prompt"], y)]
        a.append(2 * i), b.append(2 * i + 1), p.append(1.0), group.append(i)
    data = {"texts": texts, "a": a, "b": b, "p_a": p, "group": group, "val": [g >= 50 for g in group]}
    ens = RewardEnsemble("proxy", [{"name": "rm", "kind": "hf", "path": models("tiny:gpt_neox-2x32"), "seed": 1}])
    stats = ens.train(data, 1, 8, 1e-3, 0)
    assert stats["rm"]["steps"] >= 1 and stats["rm"]["params"] > 0
    sample = {"prompt": [t[0] for t in texts[:6]], "response": [t[1] for t in texts[:6]]}
    before = ens.score(sample).values[:, 0]
    saved = ens.save(str(tmp_path))["rm"]
    model = AutoModelForSequenceClassification.from_pretrained(saved).eval()
    tok = AutoTokenizer.from_pretrained(saved)
    assert model.config.num_labels == 1 and model.config.model_type == "gpt_neox" and len(tok) == len(ens.codecs[0].tok)
    gold = RewardEnsemble("gold", [{"name": "g", "kind": "hf", "path": saved, "head": "trained"}])
    assert torch.allclose(torch.tensor(gold.score(sample).values[:, 0]), torch.tensor(before), atol=1e-5)

    two = tmp_path / "two-labels"
    AutoModelForSequenceClassification.from_pretrained(models("tiny:llama-2x32"), num_labels=2).save_pretrained(two)
    AutoTokenizer.from_pretrained(models("tiny:llama-2x32")).save_pretrained(two)
    with pytest.raises(ValueError, match="2-label head"):
        RewardEnsemble("gold", [{"name": "g", "kind": "hf", "path": str(two), "head": "trained"}])


def test_dataset_columns_rows_and_emptiness_are_checked(tmp_path):
    from orchestrator.data.tables import DataError
    from orchestrator.data.tasks.dataset import read_columns

    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps({"q": f"question {i}"}) + "\n" for i in range(5)))
    assert read_columns(str(f), "train", {"prompt": "q"}, "task.dataset")["prompt"][4] == "question 4"
    with pytest.raises(DataError, match=r"task.dataset.prompt_column: .* has no column 'prompt' \(columns: q\)"):
        read_columns(str(f), "train", {"prompt": "prompt"}, "task.dataset")
    f.write_text(json.dumps({"q": "fine"}) + "\n" + json.dumps({"q": ""}) + "\n")
    with pytest.raises(DataError, match="column 'q', row 1"):
        read_columns(str(f), "train", {"prompt": "q"}, "task.dataset")
    e = tmp_path / "e.csv"
    e.write_text("q\n")
    with pytest.raises(DataError, match="is empty"):
        read_columns(str(e), "train", {"prompt": "q"}, "task.dataset")
    with pytest.raises(DataError, match="no such file"):
        read_columns(str(tmp_path / "missing.parquet"), "train", {"prompt": "q"}, "task.dataset")


# ---- bad input: one line naming the key, exit 2, nothing written, Ray never started ----------

HF_TINY = "jobs/configs/hf-tiny.yaml"


def _copy(models, ref, tmp, name, edit):
    import shutil
    from pathlib import Path

    d = Path(tmp) / name
    shutil.copytree(models(ref), d)
    edit(d)
    return str(d)


def _no_weights(d):
    for f in d.glob("*.safetensors"):
        f.unlink()


def _pickled(d):
    _no_weights(d)
    torch.save({"w": torch.zeros(2)}, d / "pytorch_model.bin")


def _no_pad_no_eos(d):
    conf = json.loads((d / "tokenizer_config.json").read_text())
    for k in ("bos_token", "eos_token", "pad_token"):
        conf.pop(k, None)
    (d / "tokenizer_config.json").write_text(json.dumps(conf))


def _bad_template(d):
    (d / "chat_template.jinja").write_text("{{ raise_exception('this template needs a system turn') }}")


def _empty_file(tmp):
    f = tmp / "empty.jsonl"
    f.write_text("")
    return str(f)


BYO_CASES = [
    ("proxy model without weights", lambda m, t: [f"proxy.models=[{_copy(m, 'tiny:gpt2-2x16', t, 'p', _no_weights)}]", "rl.sizes=[p]"],
     "proxy.models[0]: ", "no *.safetensors weights"),
    ("gold model with only pickled weights",
     lambda m, t: [f"gold.models=[{_copy(m, 'tiny:llama-2x64-rm', t, 'g', _pickled)}]"],
     "gold.models[0]: ", "pytorch_model.bin are pickled"),
    ("gold model without a one-label head", lambda m, t: [f"gold.models=[{m('tiny:llama-2x32')}]"],
     "gold.models[0]: ", "one-label sequence-classification head"),
    ("dataset without the named column", lambda m, t: ["task.dataset.prompt_column=question"],
     "task.dataset.prompt_column: ", "has no column 'question'"),
    ("empty dataset", lambda m, t: [f"task.dataset.path={_empty_file(t)}"], "task.dataset.path: ", "is empty"),
    ("preference dataset without its columns", lambda m, t: ["label.source=dataset", "label.dataset.path=tiny:prompts"],
     "label.dataset.chosen_column: ", "has no column 'chosen'"),
    ("tokenizer with neither pad nor eos",
     lambda m, t: [f"proxy.models=[{_copy(m, 'tiny:gpt2-2x16', t, 'p', _no_pad_no_eos)}]", "rl.sizes=[p]"],
     "proxy.models[0]: ", "neither a pad nor an eos token"),
    ("chat template that fails to render",
     lambda m, t: [f"sft.policy.path={_copy(m, 'tiny:qwen2-2x64', t, 'pol', _bad_template)}"],
     "sft.policy.path: ", "chat template failed to render"),
]


@pytest.mark.parametrize("case, make, key, needle", BYO_CASES, ids=[c[0] for c in BYO_CASES])
def test_bad_own_model_or_dataset_exits_2_naming_the_key(case, make, key, needle, models, tmp_path, capsys,
                                                         monkeypatch):
    from pathlib import Path

    import jobs.frontier
    import orchestrator.run.main as main

    def tripwire(*a, **k):
        raise AssertionError(f"{case}: got past validation, Ray was about to start")

    monkeypatch.setattr(main, "init_ray", tripwire)
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    overrides = make(models, tmp_path)
    run = tmp_path / "run"
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        jobs.frontier.main(["--config", HF_TINY, "--run-dir", str(run), "--quiet", *overrides])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert e.value.code == 2, (case, err[-2000:])
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}") and needle in lines[0], (case, err[-2000:])
    assert not run.exists(), f"{case}: the run directory was created"


# ---- the whole job on hf-tiny.yaml --------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_run(ray_session, models, tmp_path_factory):
    """``jobs/configs/hf-tiny.yaml`` end to end, in-process on the shared Ray: its ``tiny:`` models
    built into this module's cache, then loaded by path like a user's."""
    from orchestrator.config.schema import FrontierConfig, load
    from orchestrator.run.cli import absolute_paths
    from orchestrator.run.pipeline import run_frontier
    from orchestrator.run.preflight import preflight

    cfg = absolute_paths(FrontierConfig, load(FrontierConfig, HF_TINY))
    run_dir = tmp_path_factory.mktemp("hf-tiny")
    preflight(cfg, run_dir)
    return cfg, run_dir, run_frontier(cfg, run_dir, progress=False)


@pytest.mark.slow
def test_hf_tiny_profile_runs_the_whole_frontier_on_models_by_path(hf_run):
    import numpy as np
    import pyarrow.parquet as pq
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from orchestrator.run.pipeline import run_frontier

    cfg, run_dir, fr = hf_run
    assert [e["proxy"] for e in fr["bon"] if e["kind"] == "proxy"] == ["proxy-gpt2-2x16", "proxy-gpt_neox-2x32",
                                                                       "proxy-llama-2x48"]
    stages = {json.loads((d / "DONE.json").read_text()).get("name", f"proxy-{json.loads((d / 'DONE.json').read_text())['size']}"): d
              for d in run_dir.glob("stages/proxy-*") if not d.name.endswith(".tmp")}
    for e, arch in zip([e for e in fr["bon"] if e["kind"] == "proxy"], ("gpt2", "gpt_neox", "llama")):
        saved = stages[e["proxy"]] / "model"  # plain transformers loads every proxy, with its own tokenizer
        rm = AutoModelForSequenceClassification.from_pretrained(saved)
        assert rm.config.model_type == arch and rm.config.num_labels == 1
        assert e["proxy_params"] == sum(p.numel() for p in rm.parameters())  # the size axis: read from the model
        assert len(AutoTokenizer.from_pretrained(saved)) > 100
        assert len(e["points"]) == cfg.n_max and e["fit"]["r2"] is not None
    assert fr["task"]["dropped_long"] == 0 and fr["task"]["held_out"] >= cfg.sample.bon_prompts
    assert fr["task"]["prompts"] == cfg.sample.label_prompts + cfg.sample.bon_prompts + cfg.rl.train_prompts
    bon = pq.read_table(next(run_dir.glob("stages/bon-*/bon_scores.parquet"))).to_pydict()
    members = [np.array(bon[f"score.gold.member.gold-{k}"]) for k in ("llama-2x64-rm", "qwen2-2x32-rm")]
    assert np.allclose(np.array(bon["score.gold"]), np.mean(members, axis=0))  # gold = the members' mean
    assert len(set(np.round(members[1], 6))) > len(bon["score.gold"]) // 4  # each member reads the text
    texts = [t for t in bon["response"] if t]
    assert texts and sum(" " in t for t in texts) > len(texts) // 2  # decoded words, re-tokenized by each RM
    assert {t["trial"] for t in fr["rl"]} == {"proxy-gpt2-2x16-kl0", "proxy-gpt2-2x16-kl0.1"}
    assert all(len(t["points"]) >= 2 for t in fr["rl"])
    assert (run_dir / "report.html").is_file()
    again = run_frontier(cfg, run_dir, progress=False)  # resumed: every stage and trial cached
    assert all(t["cached"] for t in again["timings"].values()) and again["bon"] == fr["bon"]


@pytest.mark.slow
def test_gold_barrier_holds_with_model_gold(hf_run, tmp_path):
    """With gold RMs in place of the oracle the RL updates stay bit-identical to a run without gold."""
    import hashlib

    from orchestrator.run.rl_loop import RLRun, run_rl
    from orchestrator.run.rl_stage import rl_rows
    from orchestrator.run.roles import gold_members
    from orchestrator.run.slots import Slot
    from orchestrator.run.stages import StageResult
    from orchestrator.run.sweep import trial_specs

    cfg, run_dir, _ = hf_run

    def stage(name):
        d = next(d for d in sorted(run_dir.glob(f"stages/{name}-*")) if not d.name.endswith(".tmp"))
        return StageResult(name, d.name.rsplit("-", 1)[1], d, json.loads((d / "DONE.json").read_text()), True)

    task, sft = stage("task"), stage("sft")
    proxies = [StageResult("proxy", d.name.rsplit("-", 1)[1], d, json.loads((d / "DONE.json").read_text()), True)
               for d in sorted(run_dir.glob("stages/proxy-*")) if not d.name.endswith(".tmp")]
    spec = next(s for s in trial_specs(cfg, proxies) if s.name == "proxy-gpt2-2x16-kl0")
    train_rows, eval_rows = rl_rows(cfg, task)
    files = {}
    for gold in (gold_members(cfg), False):
        slot = Slot(cfg.cluster.rl, str(sft.dir / "policy"), "", list(spec.members), cfg.seed, gold, local=True)
        out = tmp_path / ("gold" if gold else "none")
        run = RLRun(cfg.rl, spec, cfg.cluster.rl, str(sft.dir / "policy"), "", train_rows, eval_rows, out, cfg.seed,
                    gold=bool(gold), slot=slot)
        try:
            run_rl(run, tensorboard=False)
            assert ("gold/mean" in run.history[-1]) == bool(gold)
        finally:
            slot.shutdown()
        last = sorted((out / "checkpoints").glob("step_*[0-9]"))[-1] / "learner.safetensors"
        files[bool(gold)] = hashlib.sha256(last.read_bytes()).hexdigest()
    assert files[True] == files[False]


def test_token_budget_splits_batches_without_changing_the_objective(models):
    """``batch_tokens`` (per role) bounds the padded tokens of a forward pass; SFT and Bradley-Terry
    steps split past it accumulate the same gradient, and split scoring gives the same scores."""
    from actors.policy_learner import PolicyLearner
    from actors.reward_ensemble import RewardEnsemble
    from orchestrator.data.tasks import synthetic as T
    from orchestrator.nn.models import token_chunks

    assert token_chunks([5, 1, 3, 9], 10, 8) == [[1, 2], [0], [3]]  # rows x longest <= 10; a long row alone
    rng = random.Random(0)
    rows = T.make_prompts(40, 5)
    pairs = [(r["prompt"], T.make_demonstration(r["family"], r["meta"], rng)) for r in rows]
    weights = []
    for bt in (0, 64):
        pol = PolicyLearner("", {"path": models("tiny:llama-2x32")}, seed=3, batch_tokens=bt)
        st = pol.sft(pairs, steps=3, sequences_per_step=16, lr=1e-3)
        weights.append(pol.weights())
    assert st["loss_last"] > 0 and abs(weights[0] - weights[1]).max() < 1e-5

    texts = pairs[:24]
    data = {"texts": texts, "a": list(range(0, 24, 2)), "b": list(range(1, 24, 2)), "p_a": [1.0, 0.0] * 6,
            "group": list(range(12)), "val": [False] * 10 + [True] * 2}
    scores = []
    for bt in (0, 48):
        ens = RewardEnsemble("proxy", [{"name": "rm", "kind": "hf", "path": models("tiny:qwen2-2x32"), "seed": 1}],
                             batch_tokens=bt)
        ens.train(data, 1, 4, 1e-3, 0)
        scores.append(ens.score({"prompt": [t[0] for t in texts], "response": [t[1] for t in texts]}).values[:, 0])
    assert abs(scores[0] - scores[1]).max() < 1e-4 and scores[0].std() > 0


def test_dataset_task_holds_out_by_seed_and_counts_what_it_drops(models, tmp_path, caplog):
    """The task stage of a dataset task (driver only, no Ray): distinct prompts, those longer than
    ``max_prompt_tokens`` of the policy's own tokens (template included) dropped and counted; the
    held-out best-of-n prompts are disjoint from labelling and RL training, and drawn by seed."""
    import logging

    import pyarrow.parquet as pq

    from orchestrator.config.schema import FrontierConfig, load
    from orchestrator.run.cli import absolute_paths
    from orchestrator.run.pipeline import stage_task

    def run(seed, d):
        cfg = absolute_paths(FrontierConfig, load(FrontierConfig, HF_TINY, ["task.dataset.max_prompt_tokens=18",
                                                                           f"seed={seed}"]))
        res = stage_task(cfg, d)
        return cfg, res, pq.read_table(res.dir / "prompts.parquet").to_pydict()

    with caplog.at_level(logging.INFO, logger="rlhf_frontier"):
        cfg, res, t = run(0, tmp_path / "a")
    codec = load_codec(cfg.sft.policy.path)
    assert res.meta["dropped_long"] > 0 and res.meta["duplicates"] > 0
    assert any("longer than 18 tokens" in r.getMessage() for r in caplog.records)
    assert all(len(codec.prompt(p)) <= 18 for p in t["prompt"])
    held = {p for p, s in zip(t["prompt"], t["split"]) if s == "bon"}
    rest = {p for p, s in zip(t["prompt"], t["split"]) if s != "bon"}
    assert len(held) == cfg.sample.bon_prompts and not held & rest
    assert t["split"].count("rl") == cfg.rl.train_prompts and t["split"].count("label") == cfg.sample.label_prompts
    assert run(0, tmp_path / "b")[2] == t  # the same seed: the same split
    assert {p for p, s in zip(*(lambda x: (x["prompt"], x["split"]))(run(1, tmp_path / "c")[2])) if s == "bon"} != held


@pytest.mark.slow
def test_dataset_labels_train_the_proxies_and_gold_only_evaluates(hf_run):
    """``label.source: dataset``: the user's (chosen, rejected) pairs become the preferences the
    proxies train on (``preference_arrays``, the proxies' input); gold labels nothing, it scores
    both sides to report its agreement with them; the gold-labelled stage is untouched."""
    import dataclasses

    import pyarrow.parquet as pq

    from orchestrator.config.schema import LabelConfig, PreferenceDatasetConfig
    from orchestrator.run.pipeline import preference_arrays, stage_label
    from orchestrator.run.stages import StageResult

    cfg, run_dir, fr = hf_run
    prefs = tiny.resolve("tiny:preferences")
    cfg = dataclasses.replace(cfg, label=LabelConfig(source="dataset", dataset=PreferenceDatasetConfig(path=prefs)))

    def done(name):
        d = next(d for d in run_dir.glob(f"stages/{name}-*") if not d.name.endswith(".tmp"))
        return StageResult(name, d.name.rsplit("-", 1)[1], d, json.loads((d / "DONE.json").read_text()), True)

    gold_labels = done("label")
    label = stage_label(cfg, run_dir, done("task"), done("sample"))  # the pool is not read: no label pool needed
    assert label.key != gold_labels.key and not label.cached
    p = pq.read_table(label.dir / "preferences.parquet").to_pydict()
    rows = [json.loads(x) for x in open(prefs)]
    assert len(p["pair_id"]) == label.meta["pairs"] == sum(r["chosen"] != r["rejected"] for r in rows)
    assert set(p["p_a"]) == {1.0} and set(p["labeler"]) == {"dataset"}
    assert (p["response_a"][0], p["response_b"][0]) == (rows[0]["chosen"], rows[0]["rejected"])
    assert 0.0 <= label.meta["gold_agreement"] <= 1.0
    arr = preference_arrays(label.dir / "preferences.parquet", cfg.proxy.val_fraction, 0)
    assert len(arr["a"]) == len(p["pair_id"]) and any(arr["val"]) and not all(arr["val"])


@pytest.mark.slow
def test_dataset_principle_columns_and_gold_principles(hf_run, tmp_path):
    """Issue 22 with your own data and models: ``label.dataset.principle_columns`` turn per-principle
    columns of the same pairs into ``preferences_<principle>.parquet`` (ties and empty cells left out,
    soft values kept); ``gold.principles`` makes a gold RM that principle's gold, which the gold
    scores carry beside the overall mean. A cell outside [0, 1] is an error naming the row."""
    import dataclasses

    import numpy as np
    import pyarrow.parquet as pq

    from orchestrator.config.schema import LabelConfig, PreferenceDatasetConfig
    from orchestrator.data.tables import DataError
    from orchestrator.run.pipeline import stage_label
    from orchestrator.run.roles import score_gold
    from orchestrator.run.stages import StageResult

    cfg, run_dir, _ = hf_run
    rows = [json.loads(x) for x in open(tiny.resolve("tiny:preferences"))]
    cycle = [1, 0, 0.5, None, 0.7]
    for i, r in enumerate(rows):
        r["helpful_pref"], r["harmless_pref"] = cycle[i % 5], 1.0
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = PreferenceDatasetConfig(path=str(path), principle_columns={"helpful": "helpful_pref", "harmless": "harmless_pref"})
    g0, g1 = cfg.gold.models
    cfg = dataclasses.replace(cfg, label=LabelConfig(source="dataset", dataset=ds),
                              proxy=dataclasses.replace(cfg.proxy, principles=("helpful", "harmless")),
                              gold=dataclasses.replace(cfg.gold, principles={"helpful": g0, "harmless": g1}))

    def done(name):
        d = next(d for d in run_dir.glob(f"stages/{name}-*") if not d.name.endswith(".tmp"))
        return StageResult(name, d.name.rsplit("-", 1)[1], d, json.loads((d / "DONE.json").read_text()), True)

    label = stage_label(cfg, run_dir, done("task"), done("sample"))
    main = pq.read_table(label.dir / "preferences.parquet").to_pydict()
    keep = [r for r in rows if r["chosen"] != r["rejected"]]
    h = pq.read_table(label.dir / "preferences_helpful.parquet").to_pydict()
    want = [(r["chosen"], r["rejected"], r["helpful_pref"]) for r in keep if r["helpful_pref"] not in (None, 0.5)]
    assert list(zip(h["response_a"], h["response_b"], h["p_a"])) == want and set(h["principle"]) == {"helpful"}
    assert label.meta["principles"]["helpful"] == {"pairs": len(want), "ties_dropped": sum(r["helpful_pref"] == 0.5 for r in keep),
                                                   "empty_dropped": sum(r["helpful_pref"] is None for r in keep)}
    assert pq.read_table(label.dir / "preferences_harmless.parquet").num_rows == len(main["pair_id"])
    g, parts = score_gold(cfg, {"prompt": main["prompt"][:6], "response": main["response_a"][:6],
                                "family": ["dataset"] * 6, "meta": ["{}"] * 6})
    members = [parts[k] for k in sorted(k for k in parts if k.startswith("member."))]
    assert np.allclose(g, np.mean(members, 0))
    assert np.array_equal(parts["helpful"], parts[f"member.gold-{g0.rstrip('/').split('/')[-1]}"])
    assert np.array_equal(parts["harmless"], parts[f"member.gold-{g1.rstrip('/').split('/')[-1]}"])
    rows[3]["helpful_pref"] = 1.5
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match="label.dataset.principle_columns.helpful: .*row 3: 1.5 is not a preference"):
        stage_label(dataclasses.replace(cfg, seed=cfg.seed + 1), run_dir, done("task"), done("sample"))


def test_sft_steps_0_takes_the_policy_as_it_is(models, tmp_path):
    from transformers import AutoModelForCausalLM

    from actors.policy_learner import PolicyLearner

    path = models("tiny:gpt_neox-2x32")
    pol = PolicyLearner("", {"path": path}, seed=0)
    st = pol.sft([("hello !", "hi !")], steps=0, sequences_per_step=1, lr=1e-3)
    assert st["steps"] == 0 and st["params"] == pol.n_params() and st["loss_last"] is None
    pol.save(str(tmp_path / "policy"))
    a = AutoModelForCausalLM.from_pretrained(path).state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "policy").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a) and load_codec(tmp_path / "policy").format == "plain"


def test_bfloat16_roles_keep_fp32_master_weights_and_stay_close(models):
    """A role's ``dtype: bfloat16``: the learner trains fp32 master weights under bf16 autocast (its
    SFT losses within 0.1% of fp32's), the generator samples from bf16 copies (log-probs of the same
    tokens within 0.01 nats of fp32's), a reward ensemble scores under autocast (within 0.01).
    Measured on these tiny models: 0.002%, 1.7e-3 and 1.7e-3."""
    from actors.policy_learner import PolicyLearner
    from actors.reward_ensemble import RewardEnsemble
    from actors.rollout_generator import RolloutGenerator
    from orchestrator.data.tasks import synthetic as T
    from orchestrator.nn.sampling import response_logprobs

    rng = random.Random(0)
    pairs = [(r["prompt"], T.make_demonstration(r["family"], r["meta"], rng)) for r in T.make_prompts(32, 6)]
    path = models("tiny:llama-2x32")
    loss = {}
    for dt in ("float32", "bfloat16"):
        pol = PolicyLearner("", {"path": path}, seed=2, dtype=dt)
        loss[dt] = pol.sft(pairs, steps=3, sequences_per_step=16, lr=1e-3)["loss_last"]
        assert next(pol.model.parameters()).dtype == torch.float32  # the master copy
    assert abs(loss["bfloat16"] - loss["float32"]) < 1e-3 * loss["float32"], loss
    gen = RolloutGenerator(path, dtype="bfloat16")
    assert next(gen.policy.parameters()).dtype == torch.bfloat16
    b = gen.generate([p for p, _ in pairs[:4]], 3, 5, 10)
    ref = RolloutGenerator(path)
    lp32 = response_logprobs(ref.policy, b.prompt_ids, b.response_ids, b.response_mask, ref.codec.pad_id)
    m = b.response_mask.bool()
    assert (b.logprobs[m] - lp32[m]).abs().max() < 0.01
    rows = {"prompt": [p for p, _ in pairs], "response": [r for _, r in pairs]}
    member = [{"name": "g", "kind": "hf", "path": models("tiny:llama-2x64-rm"), "head": "trained"}]
    s32 = RewardEnsemble("gold", member).score(rows).values
    s16 = RewardEnsemble("gold", member, dtype="bfloat16").score(rows).values
    assert 0 < abs(s32 - s16).max() < 0.01 and s32.std() > 0.1  # bf16 did round, and little


def test_dataset_domain_column_names_the_families(models, tmp_path):
    """``task.dataset.domain_column``: each prompt's family is its row's domain (the per-family
    frontiers and ``proxy.holdout_families`` read it); a held-out family the column lacks exits as a
    data error naming the key (issue 21)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from orchestrator.config.schema import FrontierConfig, load
    from orchestrator.data.tables import DataError
    from orchestrator.data.tasks import dataset as DS
    from orchestrator.run.cli import absolute_paths
    from orchestrator.run.pipeline import stage_task

    prompts = DS.read_columns(models("tiny:prompts"), "train", {"prompt": "prompt"}, "t")["prompt"]
    domain = ["math" if any(c.isdigit() for c in p) else "words" for p in prompts]
    path = tmp_path / "prompts.parquet"
    pq.write_table(pa.table({"prompt": prompts, "domain": domain}), path)
    want = dict(zip(prompts, domain))

    def run(d, *extra):
        cfg = absolute_paths(FrontierConfig, load(FrontierConfig, HF_TINY, [
            f"task.dataset.path={path}", "task.dataset.domain_column=domain", *extra]))
        res = stage_task(cfg, d)
        return pq.read_table(res.dir / "prompts.parquet").to_pydict()

    t = run(tmp_path / "a", "proxy.holdout_families=[math]")
    assert set(t["family"]) == {"math", "words"}
    assert all(f == want[p] for p, f in zip(t["prompt"], t["family"]))
    with pytest.raises(DataError, match="proxy.holdout_families"):
        run(tmp_path / "b", "proxy.holdout_families=[poetry]")
