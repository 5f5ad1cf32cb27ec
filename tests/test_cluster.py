"""Placement and faults on a real 3-node Ray cluster (``ray.cluster_utils.Cluster``): roles land where
``cluster`` config says (custom resources mark the nodes), a RolloutGenerator killed mid-generation
is restarted and a worker node removed mid-run (both in one run) leave the results of an undisturbed
run."""

import dataclasses
import hashlib
import json
import logging
import threading
import time

import pytest
import ray

from orchestrator.config.schema import RoleResources
from orchestrator.run.actor_group import ActorGroup, fetch
from orchestrator.run.rl_loop import RLRun, run_rl
from tests.test_rl import rl_inputs  # noqa: F401 -- the smoke run's models and prompts

pytestmark = pytest.mark.slow  # a 3-node Ray cluster and the smoke run: minutes, not the quick loop

VOLATILE = ("timing/", "throughput/")


@pytest.fixture(scope="module")
def three_nodes(rl_inputs):  # noqa: F811
    """A head (``head_node``) and two workers (``rollout_node``); the session's Ray comes back after."""
    from ray.cluster_utils import Cluster

    had_session = ray.is_initialized()
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"head_node": 1},
        # notice a lost node within ~2 s (defaults: ~30 s)
        "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 4}})
    workers = [cluster.add_node(num_cpus=1, resources={"rollout_node": 1}) for _ in range(2)]
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    try:
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()
        if had_session:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)


def _resources(cfg, generators: int = 2, weight_sync: str = "object_store"):
    """Learner, proxy and gold on the head node; generators on the rollout nodes, spread."""
    head = {"head_node": 0.1}
    return dataclasses.replace(
        cfg.cluster.rl, colocate=False, strategy="SPREAD", weight_sync=weight_sync,
        learner=RoleResources(1, 0.4, resources=head), proxy=RoleResources(1, 0.2, resources=head),
        gold=RoleResources(1, 0.2, resources=head),
        generator=RoleResources(generators, 0.5, resources={"rollout_node": 0.1}))


def _run(rl_inputs, out, res, steps=6):  # noqa: F811
    cfg, task, sft, specs, train_rows, eval_rows = rl_inputs
    rl = dataclasses.replace(cfg.rl, steps=steps, checkpoint_every=2)
    return RLRun(rl, specs["proxy-1x8"], res, str(sft.dir / "policy"), str(task.dir / "tokenizer"),
                 train_rows, eval_rows, out, cfg.seed)


def _result(out):
    hist = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    last = sorted((out / "checkpoints").glob("step_*[0-9]"))[-1] / "learner.safetensors"
    return ([{k: v for k, v in m.items() if not k.startswith(VOLATILE)} for m in hist],
            hashlib.sha256(last.read_bytes()).hexdigest())


@pytest.fixture(scope="module")
def undisturbed(three_nodes, rl_inputs, tmp_path_factory):  # noqa: F811
    """The reference run on the cluster, and where each of its roles ran."""
    out = tmp_path_factory.mktemp("undisturbed") / "r"
    run = _run(rl_inputs, out, _resources(rl_inputs[0]))
    try:
        where = {role: fetch(getattr(run, role).all("where")) for role in ("learner", "gen", "proxy", "gold")}
        summary = run_rl(run, tensorboard=False)
    finally:
        run.shutdown()
    return summary, _result(out), where


def test_roles_land_where_the_config_says(three_nodes, undisturbed):
    cluster, workers = three_nodes
    where = undisturbed[2]
    head_id, rollout_ids = cluster.head_node.node_id, {w.node_id for w in workers}
    for role in ("learner", "proxy", "gold"):
        assert [w["node_id"] for w in where[role]] == [head_id], role
    gen_nodes = [w["node_id"] for w in where["gen"]]
    assert set(gen_nodes) <= rollout_ids and len(set(gen_nodes)) == 2, "SPREAD puts the two generators apart"
    # stage actors outside any placement group follow the same per-role resources
    group = ActorGroup(_Probe, RoleResources(2, 0.2, resources={"rollout_node": 0.2}))
    try:
        assert {w["node_id"] for w in fetch(group.all("where"))} <= rollout_ids
    finally:
        group.shutdown()


class _Probe:
    def __init__(self, num_cpus: float = 1.0):
        pass

    def where(self) -> dict:
        from actors.placement import where

        return where()


def test_generator_killed_and_worker_node_removed_mid_run(three_nodes, rl_inputs, undisturbed, tmp_path, caplog):  # noqa: F811
    """Two faults in one run (one run of the cluster fixture instead of two, ~35 s of the suite):
    RolloutGenerator 0 is SIGKILLed inside its 4th ``generate`` (Ray restarts it in its bundle), and
    the worker node of generator 1 is removed once the run passed step 2 (its bundle moves to the
    surviving rollout node and the generator restarts there). The run completes all its steps, each
    death is logged and handled by re-pushing the weights, and its results -- metric history, final
    weights, evaluations -- equal the undisturbed run's bit for bit. This run's weights reach the
    generators by broadcast (``weight_sync: broadcast``, gloo across the nodes; the undisturbed run
    uses the object store): after each death the broadcast group is formed anew."""
    cluster, workers = three_nodes
    out = tmp_path / "r"
    run = _run(rl_inputs, out, _resources(rl_inputs[0], weight_sync="broadcast"))
    box: dict = {}

    def go():
        try:
            box["summary"] = run_rl(run, tensorboard=False)
        except BaseException as e:  # noqa: BLE001
            box["error"] = e

    try:
        before = fetch(run.gen.all("where"))
        victim_id = before[1]["node_id"]
        victim = next(w for w in workers if w.node_id == victim_id)
        assert before[0]["node_id"] != victim_id  # SPREAD: the killed generator lives elsewhere
        ray.get(run.gen.actors[0].drill_die_during_generate.remote(3))  # SIGKILL inside its 4th generate
        with caplog.at_level(logging.WARNING, logger="rlhf_frontier"):
            t = threading.Thread(target=go)
            t.start()
            deadline = time.time() + 120
            while run.step < 2 and t.is_alive() and time.time() < deadline:
                time.sleep(0.05)
            assert run.step >= 2 and t.is_alive(), box
            cluster.remove_node(victim)
            t.join(timeout=300)
        assert not t.is_alive() and "error" not in box, box.get("error")
        after = fetch(run.gen.all("where"))
    finally:
        run.shutdown()
    assert caplog.text.count("a rollout generator died") >= 2 and "re-pushing weights" in caplog.text, caplog.text
    assert after[0]["pid"] != before[0]["pid"], "the killed generator was not restarted"
    assert victim_id not in {w["node_id"] for w in after}
    assert box["summary"]["steps"] == 6
    assert _result(out) == undisturbed[1]
    assert box["summary"]["points"] == undisturbed[0]["points"]
