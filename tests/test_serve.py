"""Reward models as a service (issue 23): batch-invariant scoring, the request contract, the run
directory checks, and a real Serve deployment of the smoke run's models over real HTTP."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from orchestrator.run import service as S
from orchestrator.run.bench_serve import pool_rows

WORDS = "the a cat dog runs fast slow blue red green house tree river stone light dark one two".split()


def _texts(n: int, seed: int) -> dict:
    rng = random.Random(seed)
    return {"prompt": [" ".join(rng.choices(WORDS, k=rng.randint(2, 8))) for _ in range(n)],
            "response": [" ".join(rng.choices(WORDS, k=rng.randint(1, 40))) for _ in range(n)]}


def test_invariant_chunks_fix_each_pass_shape_by_its_bucket():
    from orchestrator.nn.models import invariant_chunks, score_bucket

    rng = random.Random(0)
    lengths = [rng.randint(1, 300) for _ in range(500)]
    chunks = invariant_chunks(lengths, 512, max_len=280)
    assert sorted(i for idx, _, _ in chunks for i in idx) == list(range(500))  # every row once
    for idx, t, rows in chunks:
        assert all(score_bucket(lengths[i], 280) == t for i in idx)  # one bucket per pass
        assert t >= max(lengths[i] for i in idx) and rows == max(1, 512 // t) and len(idx) <= rows
    assert {score_bucket(n, 280) for n in (17, 31, 32)} == {32} and score_bucket(270, 280) == 280
    assert score_bucket(300, 280) == 300  # never shorter than the sequence


@pytest.mark.parametrize("arch,batch_tokens", [("gpt2", 0), ("llama", 96)])
def test_a_rows_score_does_not_depend_on_what_it_is_scored_with(tiny_models, arch, batch_tokens):
    """Any subset, order or mix with other rows gives every row the same score, bit for bit --
    what lets the service batch concurrent clients and still return the run's numbers."""
    from actors.reward_ensemble import RewardEnsemble

    path = tiny_models(f"tiny:{arch}-2x32-rm")
    ens = RewardEnsemble("gold", [{"name": "rm", "kind": "hf", "path": path, "head": "trained"}],
                         batch_tokens=batch_tokens)
    rows = _texts(300, 1)
    full = ens.score(rows).values[:, 0]
    assert len(set(full.tolist())) > 250  # a real model: distinct scores
    rng = random.Random(2)
    others = _texts(50, 3)
    for k in (1, 2, 7, 64, 299):
        idx = rng.sample(range(300), k)
        sub = {c: [rows[c][i] for i in idx] + others[c][: k % 13] for c in rows}  # mixed with other rows
        got = ens.score(sub).values[:k, 0]
        np.testing.assert_array_equal(got, full[idx])


# ---- the request contract -----------------------------------------------------------------
MAN = {"models": [{"name": "proxy-a", "role": "proxy", "member": {"name": "proxy-a", "kind": "hf"}},
                  {"name": "oracle", "role": "gold", "member": {"name": "oracle", "kind": "oracle"}}],
       "uwo_lambda": 0.1}
PROMPTS = {"what is 1 plus 2 ?": ("arith", '{"a": 1, "b": 2}')}


def _parse(body, max_rows=4, max_chars=50):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return S.parse_score(raw, MAN, PROMPTS, max_rows, max_chars)


@pytest.mark.parametrize("body,status,names", [
    (b"{not json", 400, "malformed JSON"),
    ([1, 2], 400, "JSON object"),
    ({"prompts": ["x"]}, 400, "responses: missing"),
    ({"prompts": "x", "responses": ["y"]}, 400, "prompts: expected a list"),
    ({"prompts": [3], "responses": ["y"]}, 400, "prompts[0]: expected a string"),
    ({"prompts": [], "responses": []}, 400, "prompts: empty"),
    ({"prompts": ["a", "b"], "responses": ["y"]}, 400, "prompts has 2 rows, responses 1"),
    ({"prompts": ["a"] * 5, "responses": ["y"] * 5}, 400, "at most 4 per request"),
    ({"prompts": ["a"], "responses": ["y" * 51]}, 400, "responses[0]: 51 characters"),
    ({"prompts": ["a"], "responses": ["y"], "models": ["proxy-zz"]}, 404, "unknown model 'proxy-zz'"),
    ({"prompts": ["a"], "responses": ["y"], "models": "proxy-a"}, 400, "models: expected"),
    ({"prompts": ["a"], "responses": ["y"], "aggregate": "max"}, 400, "aggregate: 'max'"),
    ({"prompts": ["a"], "responses": ["y"], "temperature": 1}, 400, "unknown field 'temperature'"),
    ({"prompts": ["a"], "responses": ["y"]}, 400, "prompts[0]: not a prompt of this run's task"),
])
def test_bad_requests_get_a_one_line_4xx_naming_the_field(body, status, names):
    with pytest.raises(S.RequestError) as e:
        _parse(body)
    assert e.value.status == status and names in e.value.message and "\n" not in e.value.message


def test_serving_options_give_fixed_replicas_or_autoscaling():
    from orchestrator.config.serve import ModelServing, ServeConfig

    assert ModelServing(replicas=2).deployment_options()["num_replicas"] == 2
    auto = ModelServing(replicas=1, max_replicas=4, target_ongoing_requests=3).deployment_options()
    assert auto["autoscaling_config"] == {"min_replicas": 1, "initial_replicas": 1, "max_replicas": 4,
                                          "target_ongoing_requests": 3} and "num_replicas" not in auto
    cfg = ServeConfig(models={"*": ModelServing(num_cpus=0.2), "proxy-1x8": ModelServing(replicas=3)})
    assert cfg.model("proxy-1x8").replicas == 3 and cfg.model("other").num_cpus == 0.2
    assert ServeConfig().loopback and not ServeConfig(host="0.0.0.0").loopback


def test_a_good_request_reads_the_oracles_metadata_and_aggregates_proxies_only():
    req = _parse({"prompts": ["what is 1 plus 2 ?"], "responses": ["3"], "aggregate": "wco"})
    assert req.models == ["proxy-a", "oracle"] and req.rows["family"] == ["arith"]
    only = _parse({"prompts": ["anything"], "responses": ["y"], "models": ["proxy-a"]})
    assert "family" not in only.rows  # no oracle asked: any prompt is fine
    out = S.answer({"proxy-a": {"scores": [0.5], "principles": {}},
                    "oracle": {"scores": [1.0], "principles": {"helpful": [1.0]}}}, req, MAN)
    assert out["aggregate"] == {"objective": "wco", "over": ["proxy-a"], "scores": [0.5]}
    assert out["principles"] == {"oracle": {"helpful": [1.0]}}


# ---- the run directory --------------------------------------------------------------------
def _fake_run(tmp: Path, **change) -> Path:
    from orchestrator.config.schema import FrontierConfig, load
    from orchestrator.report.render import versions
    from orchestrator.run.cli import save_config

    run = tmp / "run"
    (run / "stages" / "proxy-x" / "model").mkdir(parents=True)
    save_config(load(FrontierConfig, "jobs/configs/smoke.yaml"), run)
    (run / "frontier.json").write_text("{}")
    man = {"format": S.FORMAT, "scoring": S.SCORING, "versions": versions(), "prompts": None, "tokenizer": "",
           "models": [{"name": "proxy-x", "role": "proxy",
                       "member": {"name": "proxy-x", "kind": "hf", "path": "stages/proxy-x/model"}}]}
    man.update(change)
    (run / S.MANIFEST).write_text(json.dumps(man))
    return run


def test_load_manifest_makes_paths_absolute(tmp_path):
    man = S.load_manifest(_fake_run(tmp_path))
    assert man["models"][0]["member"]["path"] == str(tmp_path / "run" / "stages" / "proxy-x" / "model")


@pytest.mark.parametrize("case,names", [
    ("missing", "no such directory"), ("unfinished", "not a finished run"), ("no-manifest", "another version"),
    ("format", "of another version"), ("scoring", "of another version"), ("model-gone", "is missing"),
    ("corrupt", "not valid JSON")])
def test_a_missing_unfinished_or_foreign_run_is_refused_with_exit_2(tmp_path, case, names):
    run = _fake_run(tmp_path, **({"format": 99} if case == "format" else {"scoring": 1} if case == "scoring" else {}))
    if case == "missing":
        run = tmp_path / "nothing"
    elif case == "unfinished":
        (run / "frontier.json").unlink()
    elif case == "no-manifest":
        (run / S.MANIFEST).unlink()
    elif case == "model-gone":
        (run / "stages" / "proxy-x" / "model").rmdir()
    elif case == "corrupt":
        (run / S.MANIFEST).write_text('{"format": 1,')
    with pytest.raises(S.ConfigError, match=names):
        S.load_manifest(run)
    if case in ("missing", "format"):  # the job itself: exit 2, one line, before Ray starts
        r = subprocess.run([sys.executable, "-m", "jobs.serve", "--run-dir", str(run)], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 2 and names in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_binding_off_loopback_needs_a_token(tmp_path):
    run = _fake_run(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "RLHF_FRONTIER_SERVE_TOKEN"}
    r = subprocess.run([sys.executable, "-m", "jobs.serve", "--run-dir", str(run), "cluster.serve.host=0.0.0.0"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and "RLHF_FRONTIER_SERVE_TOKEN" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "jobs.serve", "--run-dir", str(run), "seed=3"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and "only cluster.* keys" in r.stderr, r.stderr


# ---- a real deployment of the smoke run's models ------------------------------------------
def load_cfg(run_dir: Path):
    from orchestrator.config.schema import FrontierConfig, load

    return load(FrontierConfig, run_dir / "config.yaml")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(url: str, path: str, body=None, token: str = "", timeout: float = 120):
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = raw.decode(errors="replace")
        return e.code, payload, {k.lower(): v for k, v in e.headers.items()}


TOKEN = "s3cret-for-tests"


@pytest.fixture(scope="module")
def served(smoke_run):
    """``python -m jobs.serve --run-dir RUN --port PORT`` on the smoke run, as a user starts it (its
    own Ray): every proxy and the oracle, a token from the environment, 2 requests at work and 2
    waiting (the overload test fills that); stopped with SIGTERM, which must exit 0."""
    import select
    import signal

    _, run_dir, _ = smoke_run
    man = S.load_manifest(run_dir)
    port = _free_port()
    cmd = [sys.executable, "-m", "jobs.serve", "--run-dir", str(run_dir), "--port", str(port),
           'cluster.serve.models={"*": {num_cpus: 0.05}}', "cluster.serve.entry={num_cpus: 0.05}",
           "cluster.serve.max_ongoing_requests=2", "cluster.serve.max_queued_requests=2",
           "cluster.serve.retry_after_s=1"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         env={**os.environ, "RLHF_FRONTIER_SERVE_TOKEN": TOKEN})
    line = ""
    ready, _, _ = select.select([p.stdout], [], [], 240)
    if ready:
        line = p.stdout.readline()
    if not line.startswith("{"):
        p.kill()
        raise RuntimeError(f"jobs.serve did not start (rc {p.poll()}): {line!r}")
    url = json.loads(line)["url"]
    assert url == f"http://127.0.0.1:{port}"
    yield url, man, run_dir
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=120) == 0


def _patient(url: str, path: str, body) -> tuple:
    """A polite client: on 503 it waits ``Retry-After`` seconds and asks again (at most 60 times)."""
    import time

    for _ in range(60):
        st, payload, headers = _call(url, path, body, token=TOKEN)
        if st != 503:
            return st, payload, headers
        time.sleep(float(headers["retry-after"]))
    raise AssertionError("still 503 after 60 tries")


@pytest.mark.slow
def test_served_scores_equal_the_runs_bit_for_bit(served):
    """Concurrent clients with requests of random sizes (batched together by Serve) get exactly the
    run's in-process scores: the run's own best-of-n scores (normalized as its RL runs saw them)
    and a fresh in-process ensemble's; the oracle's equal the task's oracle."""
    import pyarrow.parquet as pq

    from actors.reward_ensemble import RewardEnsemble
    from orchestrator.math.ensembles import aggregate_np

    url, man, run_dir = served
    smoke_cfg = load_cfg(run_dir)
    assert _call(url, "/healthz")[:2] == (200, {"status": "ok", "models": len(man["models"])})
    st, listing, _ = _call(url, "/v1/models", token=TOKEN)
    by = {m["name"]: m for m in listing["data"]}
    assert st == 200 and set(by) == {e["name"] for e in man["models"]} and by["oracle"]["role"] == "gold"
    proxies = [e for e in man["models"] if e["role"] == "proxy"]
    assert len(proxies) >= 4
    for e in proxies:
        assert by[e["name"]]["parameters"] == e["parameters"] > 0
    for size in smoke_cfg.proxy.sizes:  # the sweep's proxies: their held-out calibration
        cal = by[f"proxy-{size}"]["calibration"]
        assert 0 <= cal["acc"] <= 1 and cal["pairs"] > 0 and cal["tau"] > 0
    rows = pool_rows(run_dir, man)
    n = len(rows["response"])
    rng = random.Random(0)
    cuts = sorted(rng.sample(range(1, n), 11))
    pieces = list(zip([0, *cuts], [*cuts, n]))

    def ask(piece):
        a, b = piece
        return _patient(url, "/v1/score", {"prompts": rows["prompt"][a:b], "responses": rows["response"][a:b],
                                           "aggregate": "uwo"})

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, pieces))
    assert all(st == 200 for st, _, _ in answers), [a[:2] for a in answers if a[0] != 200][:1]
    got = {e["name"]: np.concatenate([a["scores"][e["name"]] for _, a, _ in answers]) for e in man["models"]}
    for e in proxies:
        m = e["member"]
        stage = Path(m["path"]).parent
        raw = np.asarray(pq.read_table(stage / "bon_scores.parquet", columns=["score"])["score"], np.float64)
        shift, scale = m.get("norm", (0.0, 1.0))
        np.testing.assert_array_equal(got[e["name"]], (raw - shift) / scale, err_msg=e["name"])
    own = RewardEnsemble("proxy", [proxies[0]["member"]], man["tokenizer"])
    np.testing.assert_array_equal(got[proxies[0]["name"]], own.score(rows).values[:, 0])
    from orchestrator.data.tasks.synthetic import oracle

    table = S.prompt_table(man)
    want = [oracle(*table[p], r)["gold"] for p, r in zip(rows["prompt"], rows["response"])]
    np.testing.assert_array_equal(got["oracle"], want)
    agg = np.concatenate([a["aggregate"]["scores"] for _, a, _ in answers])
    z = np.stack([got[e["name"]] for e in proxies], axis=1)
    np.testing.assert_allclose(agg, aggregate_np(z, "uwo", man["uwo_lambda"]), rtol=0, atol=0)


@pytest.mark.slow
def test_bad_http_requests_and_a_missing_token_answer_4xx_and_the_service_goes_on(served):
    url, man, _ = served
    good = {"prompts": ["what is 1 plus 2 ?"], "responses": ["3"], "models": [man["models"][0]["name"]]}
    cases = [(b"{oops", 400), ({**good, "prompts": [1]}, 400), ({**good, "responses": ["a", "b"]}, 400),
             ({**good, "prompts": [], "responses": []}, 400), ({**good, "responses": ["x" * 9000]}, 400),
             ({**good, "models": ["nope"]}, 404)]
    for body, status in cases:
        st, payload, _ = _call(url, "/v1/score", body, token=TOKEN)
        assert st == status and "\n" not in payload["error"]["message"], (body, st, payload)
    assert _call(url, "/v1/nothing")[0] == 404 and _call(url, "/v1/score", token=TOKEN)[0] == 405  # a GET
    assert _call(url, "/v1/score", good)[0] == 401 and _call(url, "/v1/score", good, token="wrong")[0] == 401
    assert _call(url, "/v1/models")[0] == 401 and _call(url, "/healthz")[0] == 200  # health stays open
    st, payload, _ = _patient(url, "/v1/score", good)
    assert st == 200 and len(payload["scores"][good["models"][0]]) == 1
    only_gold = {"prompts": [next(iter(S.prompt_table(man)))], "responses": ["paris"], "models": ["oracle"]}
    st, payload, _ = _patient(url, "/v1/score", only_gold)
    assert st == 200 and list(payload["scores"]) == ["oracle"] and payload["aggregate"] is None


@pytest.mark.slow
def test_overload_answers_503_with_retry_after_then_serves(served):
    """2 at work, 2 waiting: 48 concurrent requests of the whole pool -- the excess is refused at once
    (503, Retry-After), none fails otherwise or hangs -- and the service answers normally after."""
    url, man, run_dir = served
    name = man["models"][0]["name"]
    rows = pool_rows(run_dir, man)
    body = {"prompts": rows["prompt"], "responses": rows["response"], "models": [name]}
    with ThreadPoolExecutor(48) as pool:
        answers = list(pool.map(lambda _: _call(url, "/v1/score", body, token=TOKEN, timeout=60), range(48)))
    codes = [a[0] for a in answers]
    assert set(codes) <= {200, 503} and codes.count(503) >= 10 and codes.count(200) >= 1, codes
    assert all(a[2].get("retry-after") == "1" for a in answers if a[0] == 503)
    ok = [a[1]["scores"][name] for a in answers if a[0] == 200]
    assert all(o == ok[0] for o in ok)  # the same rows, the same scores
    st, payload, _ = _patient(url, "/v1/score", body)
    assert st == 200 and payload["scores"][name] == ok[0]


@pytest.mark.slow
def test_rl_scoring_through_the_service_gives_the_same_run_and_keeps_gold_sealed(smoke_run, tmp_path):
    """``cluster.rl.reward_service: serve``: an RL run (the WCO ensemble's: three proxies, and the
    oracle; 2 steps) scored by the deployed service ends with the same learner weights and the same metrics
    as in-process scoring; without gold it updates identically (the barrier), and the service's
    gold comes back sealed."""
    import dataclasses

    import ray
    import torch

    from orchestrator.data.batch import BarrierError
    from orchestrator.run import rl_stage as P
    from orchestrator.run.actor_group import fetch
    from orchestrator.run.rl_loop import RLRun, run_rl
    from orchestrator.run.service_client import _remote_score, deploy_for_rl, undeploy
    from orchestrator.run.slots import Slot
    from orchestrator.run.sweep import trial_specs
    from tests.test_rl import _learner_file, _sha, _stable, _stage

    cfg, run_dir, _ = smoke_run
    task, sft = _stage(run_dir, "task"), _stage(run_dir, "sft", cfg.sft.policy.size)
    proxies = [_stage(run_dir, "proxy", s) for s in cfg.proxy.sizes]
    spec = next(s for s in trial_specs(cfg, proxies) if len(s.members) > 1)
    train_rows, eval_rows = P.rl_rows(cfg, task)
    rl = dataclasses.replace(cfg.rl, steps=2)  # evaluations at steps 0 and 2, a checkpoint at 2
    policy, tok = str(sft.dir / "policy"), str(task.dir / "tokenizer")
    from ray import serve

    from orchestrator.config.serve import ModelServing

    # the serving settings come from the config: here the oracle on two replicas
    two = {"*": ModelServing(num_cpus=0.05), "oracle": ModelServing(replicas=2, num_cpus=0.05)}
    cfg = dataclasses.replace(cfg, cluster=dataclasses.replace(
        cfg.cluster, serve=dataclasses.replace(cfg.cluster.serve, models=two)))
    app = deploy_for_rl(cfg, run_dir, task, proxies, None, [m["name"] for m in spec.members] + ["oracle"])
    assert serve.status().applications[app].deployments["model-oracle"].replica_states.get("RUNNING") == 2
    runs, slots = {}, []
    try:
        for mode in ("actor", "serve", "serve-no-gold"):
            gold = mode != "serve-no-gold"
            slot = Slot(cfg.cluster.rl, policy, tok, list(spec.members), cfg.seed, gold, local=True,
                        reward_app="" if mode == "actor" else app)
            slots.append(slot)
            runs[mode] = RLRun(rl, spec, cfg.cluster.rl, policy, tok, train_rows, eval_rows, tmp_path / mode,
                               cfg.seed, gold=gold, slot=slot)
            run_rl(runs[mode], tensorboard=False)
        shas = {m: _sha(_learner_file(tmp_path / m)) for m in runs}
        assert shas["actor"] == shas["serve"] == shas["serve-no-gold"], shas
        assert _stable(runs["actor"].history) == _stable(runs["serve"].history)
        def same(x, y) -> bool:
            return x == y or (isinstance(x, float) and isinstance(y, float) and np.isnan(x) and np.isnan(y))

        diff = {k for a, b in zip(runs["actor"].evals, runs["serve"].evals) for k in set(a) | set(b)
                if not same(a.get(k), b.get(k))}
        assert len(runs["actor"].evals) == len(runs["serve"].evals) > 1 and not diff, diff
        assert "gold" in runs["serve"].evals[-1]
        strip = [{k: v for k, v in m.items() if not k.startswith("gold")} for m in _stable(runs["serve"].history)]
        assert strip == _stable(runs["serve-no-gold"].history)
        batch, proxy, gold_refs = runs["serve"].rollouts(0)
        sealed = fetch(gold_refs[0])
        with pytest.raises(BarrierError):
            torch.tensor(np.asarray(sealed.values)[:, 0])
        # the remote path (separate role actors chain scoring onto generation): an ObjectRef in, the same numbers
        names = [m["name"] for m in spec.members]
        ref = _remote_score.remote(app, names, "score_rollouts", ray.put(batch), ray.put(
            {k: train_rows[k] for k in ("prompt", "family", "meta")}))
        own = slots[0].proxy.one("score_rollouts", batch, {k: train_rows[k] for k in ("prompt", "family", "meta")})
        np.testing.assert_array_equal(fetch(ref).values, fetch(own).values)
    finally:
        for s in slots:
            s.shutdown()
        undeploy(app)
