"""The cluster-operations files (cluster/*.yaml, cluster/start_local_head.sh) against what the
project needs from them: pure parsing, no Ray started and no cloud or Kubernetes API called.

What is checked: every file parses; the RayJob runs ``python -m jobs.frontier`` with a config that
exists and loads and a run directory on the volume every Ray pod mounts; every custom resource the
job config asks for is offered by a RayJob worker group and an AWS node type, with the GPUs and
CPUs the roles ask for and room for ``cluster.rl.max_concurrent`` runs; the dashboard binds to
127.0.0.1 and token authentication stays on everywhere; the runtime_envs are well-formed, carry
no credential and do not collide with the driver's own ``ray.init`` runtime_env.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import re
import shlex
from pathlib import Path

import pytest
import tomllib
import yaml

from orchestrator.config.schema import (
    FrontierConfig,
    RoleResources,
    TrialResources,
    load,
    to_dict,
)
from orchestrator.run.cli import parser

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
YAMLS = sorted(CLUSTER.glob("*.yaml"))
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")


def _secret_like(name: str) -> bool:
    """WANDB_API_KEY, HF_TOKEN, AWS_SECRET_ACCESS_KEY, DB_PASSWORD ...: a word of the name is, or ends
    with, KEY / TOKEN / SECRET / PASSWORD (TOKENIZERS_PARALLELISM is not one)."""
    return any(part.endswith(SECRET_WORDS) for part in name.upper().split("_"))
# ray.runtime_env.RuntimeEnv's public fields (Ray 2.60)
RUNTIME_ENV_KEYS = {"working_dir", "excludes", "env_vars", "pip", "uv", "conda", "py_modules", "py_executable",
                    "container", "image_uri", "worker_process_setup_hook", "java_jars", "config"}


def _docs(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _aws() -> dict:
    (doc,) = _docs(CLUSTER / "aws-gpu.yaml")
    return doc


def _kind(kind: str) -> dict:
    (doc,) = [d for d in _docs(CLUSTER / "rayjob.yaml") if d.get("kind") == kind]
    return doc


def _rayjob() -> dict:
    return _kind("RayJob")


def _ray_container(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]  # KubeRay: the Ray container comes first


def _quantity(q) -> float:
    """A Kubernetes quantity of CPUs or GPUs: 4, "4", "500m"."""
    s = str(q)
    return float(s[:-1]) / 1000 if s.endswith("m") else float(s)


def _kuberay_resources(params: dict) -> dict:
    """``rayStartParams.resources``: KubeRay's '"{\\"name\\": 1}"' -- a JSON string holding a JSON object."""
    raw = params.get("resources")
    if raw is None:
        return {}
    value = json.loads(raw)
    if isinstance(value, str):
        value = json.loads(value)
    assert isinstance(value, dict), f"rayStartParams.resources {raw!r} is not a JSON object"
    return value


def _rayjob_offers() -> dict[str, dict]:
    """Worker group -> what one pod offers Ray (custom resources, CPU, GPU), and its maxReplicas."""
    out = {}
    for g in _rayjob()["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        params, limits = g.get("rayStartParams", {}), _ray_container(g)["resources"]["limits"]
        offer = dict(_kuberay_resources(params))
        offer["CPU"] = _quantity(params.get("num-cpus", limits["cpu"]))
        offer["GPU"] = _quantity(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))
        out[g["groupName"]] = {"offer": offer, "min": g.get("minReplicas", 0), "max": g["maxReplicas"]}
    return out


def _aws_offers() -> dict[str, dict]:
    aws = _aws()
    out = {}
    for name, t in aws["available_node_types"].items():
        res = dict(t.get("resources", {}))
        assert "CPU" in res, f"{name}: write its CPU count out (resources.CPU) so the roles can be checked"
        res.setdefault("GPU", 0)
        head = name == aws["head_node_type"]
        out[name] = {"offer": res, "min": 1 if head else t.get("min_workers", 0),
                     "max": 1 if head else t["max_workers"]}
    return out


OFFERS = {"rayjob": _rayjob_offers, "aws": _aws_offers}


def _entrypoint_args():
    argv = shlex.split(_rayjob()["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "jobs.frontier"], argv
    return parser("python -m jobs.frontier", "", ROOT / "jobs/configs/default.yaml").parse_args(argv[3:])


def _job_config() -> FrontierConfig:
    return load(FrontierConfig, ROOT / _entrypoint_args().config)


def _roles(cfg: FrontierConfig) -> dict[str, RoleResources]:
    """Every role of ``cluster`` and ``cluster.rl``: cluster.learner ... cluster.rl.gold."""
    out = {}
    for section, obj in (("cluster", cfg.cluster), ("cluster.rl", cfg.cluster.rl)):
        for f in dataclasses.fields(obj):
            if isinstance(getattr(obj, f.name), RoleResources):
                out[f"{section}.{f.name}"] = getattr(obj, f.name)
    return out


def _runtime_envs() -> dict[str, dict]:
    (local,) = _docs(CLUSTER / "runtime_env.yaml")
    job = yaml.safe_load(_rayjob()["spec"]["runtimeEnvYAML"])
    return {"runtime_env.yaml": local, "rayjob.yaml runtimeEnvYAML": job}


# --------------------------------------------------------------------------------------------
# parsing


def test_the_cluster_files_exist():
    assert {p.name for p in YAMLS} >= {"aws-gpu.yaml", "rayjob.yaml", "runtime_env.yaml"}
    assert (CLUSTER / "start_local_head.sh").is_file()


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_every_cluster_yaml_parses(path):
    docs = _docs(path)
    assert docs and all(isinstance(d, dict) for d in docs)


def test_rayjob_runtime_env_yaml_string_parses():
    spec = _rayjob()["spec"]
    assert isinstance(spec["runtimeEnvYAML"], str)
    assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict)


def test_aws_config_matches_rays_cluster_schema():
    """Ray's own schema for cluster launcher configs (shipped in the ray wheel; read, not imported)."""
    jsonschema = pytest.importorskip("jsonschema")
    spec = importlib.util.find_spec("ray")
    schema = Path(list(spec.submodule_search_locations)[0]) / "autoscaler" / "ray-schema.json"
    if not schema.is_file():
        pytest.skip("this ray install ships no ray-schema.json")
    jsonschema.validate(_aws(), json.loads(schema.read_text()))


# --------------------------------------------------------------------------------------------
# the RayJob's job


def test_rayjob_entrypoint_runs_the_frontier_job_with_a_shipped_config():
    args = _entrypoint_args()
    assert args.config and (ROOT / args.config).is_file(), args.config
    assert Path(args.config).parent == Path("jobs/configs")
    assert args.run_dir and Path(args.run_dir).is_absolute(), "the run directory must be on the mounted volume"
    cfg = _job_config()
    assert cfg.rl.enabled


def test_rayjob_run_dir_is_on_the_volume_every_ray_pod_mounts():
    """Actors on any node load the policy, tokenizer and proxies from the run directory by path."""
    spec = _rayjob()["spec"]
    run_dir = Path(_entrypoint_args().run_dir)
    cluster = spec["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    claims = set()
    for g in groups:
        pod = g["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        mounts = [(m, volumes[m["name"]]) for m in _ray_container(g).get("volumeMounts", [])
                  if m["name"] in volumes and "persistentVolumeClaim" in volumes[m["name"]]
                  and run_dir.is_relative_to(m["mountPath"])]
        assert mounts, f"{g.get('groupName', 'head')}: no persistent volume mounted above {run_dir}"
        claims |= {(m["mountPath"], v["persistentVolumeClaim"]["claimName"]) for m, v in mounts}
    assert len(claims) == 1, f"the pods mount different volumes or paths for the run directory: {claims}"
    ((_, claim),) = claims
    pvc = _kind("PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == claim
    assert "ReadWriteMany" in pvc["spec"]["accessModes"], "every node writes the run directory"


def test_rayjob_finishes_and_cleans_up():
    spec = _rayjob()["spec"]
    assert _rayjob()["apiVersion"] == "ray.io/v1"
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0


def test_gpu_config_is_the_default_experiment():
    """cluster-gpu.yaml changes the hardware (cluster) and the sweep's breadth, not the science."""
    gpu, default = to_dict(_job_config()), to_dict(load(FrontierConfig, ROOT / "jobs/configs/default.yaml"))
    for key in default:
        if key not in ("cluster", "sweep"):
            assert gpu[key] == default[key], f"{key} differs from default.yaml"


# --------------------------------------------------------------------------------------------
# resources: the job config's roles against the node types / worker groups


@pytest.mark.parametrize("where", sorted(OFFERS))
def test_every_requested_custom_resource_is_offered(where):
    offers = OFFERS[where]()
    roles = _roles(_job_config())
    requested = {k for r in roles.values() for k in r.resources}
    assert {"learner_node", "rollout_node"} <= requested  # else this test checks nothing
    for name, role in roles.items():
        fits = [n for n, o in offers.items()
                if all(o["offer"].get(k, 0) >= v for k, v in role.resources.items())]
        assert fits, f"{where}: nothing offers {name}.resources {role.resources}"
        if role.resources:  # pinned: it must fit on every node that offers its resources
            for n in fits:
                o = offers[n]["offer"]
                assert role.num_gpus <= o["GPU"], f"{where}: {name} asks {role.num_gpus} GPUs, {n} has {o['GPU']}"
                assert role.num_cpus <= o["CPU"], f"{where}: {name} asks {role.num_cpus} CPUs, {n} has {o['CPU']}"
        else:  # unpinned (e.g. cluster.labeler): on some node
            assert any(role.num_gpus <= offers[n]["offer"]["GPU"] and role.num_cpus <= offers[n]["offer"]["CPU"]
                       for n in fits), f"{where}: no node holds {name}"


@pytest.mark.parametrize("where", sorted(OFFERS))
def test_requested_resources_exist_when_the_job_starts(where):
    """jobs.frontier checks the cluster's resources (validate_resources) before it starts, so every
    custom resource it asks for must be on a node that is always up."""
    offers = OFFERS[where]()
    requested = {k for r in _roles(_job_config()).values() for k in r.resources}
    for k in requested:
        assert any(o["min"] >= 1 and o["offer"].get(k, 0) > 0 for o in offers.values()), \
            f"{where}: {k} is only on node types that scale from zero"


@pytest.mark.parametrize("where", sorted(OFFERS))
def test_the_largest_cluster_holds_max_concurrent_runs(where):
    """cluster.rl.max_concurrent RL runs at once fit (GPUs and CPUs, per custom resource) in the node
    types at their maximum counts: a necessary condition, not a bin packing."""
    offers = OFFERS[where]()
    t: TrialResources = _job_config().cluster.rl
    assert t.max_concurrent >= 1 and not t.colocate
    for marker in {k for b in t.bundles() for k in b if k not in ("CPU", "GPU")}:
        need_gpu = t.max_concurrent * sum(b.get("GPU", 0) for b in t.bundles() if marker in b)
        need_cpu = t.max_concurrent * sum(b["CPU"] for b in t.bundles() if marker in b)
        nodes = [o for o in offers.values() if o["offer"].get(marker, 0) > 0]
        have_gpu = sum(o["max"] * o["offer"]["GPU"] for o in nodes)
        have_cpu = sum(o["max"] * o["offer"]["CPU"] for o in nodes)
        assert need_gpu <= have_gpu + 1e-9, f"{where}: {marker}: {need_gpu} GPUs needed, {have_gpu} at most"
        assert need_cpu <= have_cpu + 1e-9, f"{where}: {marker}: {need_cpu} CPUs needed, {have_cpu} at most"
        # whole learners: a 1-GPU learner per GPU, never split across nodes
        for b in t.bundles():
            if marker in b and b.get("GPU", 0) >= 1:
                assert all(o["offer"]["GPU"] >= math.ceil(b["GPU"]) for o in nodes)


def test_aws_worker_maxima_are_reachable():
    aws = _aws()
    types_ = [t for n, t in aws["available_node_types"].items() if n != aws["head_node_type"]]
    assert all(0 <= t["min_workers"] <= t["max_workers"] for t in types_)
    assert sum(t["max_workers"] for t in types_) <= aws["max_workers"]
    assert aws["provider"]["type"] == "aws" and aws["provider"]["region"] == "us-west-2"


def test_rayjob_gpu_requests_equal_limits():
    for g in _rayjob()["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        res = _ray_container(g)["resources"]
        assert res["requests"].get("nvidia.com/gpu") == res["limits"].get("nvidia.com/gpu"), g["groupName"]
        assert 0 <= g.get("minReplicas", 0) <= g["replicas"] <= g["maxReplicas"], g["groupName"]


# --------------------------------------------------------------------------------------------
# dashboard on 127.0.0.1, token authentication on


def _ray_start_lines(commands: list[str]) -> list[str]:
    return [c for c in commands if re.search(r"\bray start\b", c)]


def test_aws_dashboard_binds_localhost_and_auth_is_on():
    aws = _aws()
    (head,) = _ray_start_lines(aws["head_start_ray_commands"])
    assert "--head" in head
    assert re.search(r"--dashboard-host[= ]127\.0\.0\.1(\s|$)", head), head
    (worker,) = _ray_start_lines(aws["worker_start_ray_commands"])
    for cmd in (head, worker):
        assert re.search(r"RAY_AUTH_MODE=token\s+ray start\b", cmd), cmd
    text = json.dumps(aws)  # the parsed config: comments may name what is forbidden
    assert "0.0.0.0" not in text and "RAY_AUTH_MODE=disabled" not in text
    # every node reads the same token from the default path
    mounts = aws["file_mounts"]
    assert any(remote.endswith("/.ray/auth_token") and local.endswith(".ray/auth_token")
               for remote, local in mounts.items())


def test_rayjob_dashboard_binds_localhost_and_auth_is_on():
    cluster = _rayjob()["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    assert cluster.get("authOptions", {}).get("mode") == "token"
    for g in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        assert "0.0.0.0" not in json.dumps(g.get("rayStartParams", {}))
        for c in g["template"]["spec"]["containers"]:
            for e in c.get("env", []):
                assert not (e["name"] == "RAY_AUTH_MODE" and e.get("value") != "token"), e
                if _secret_like(e["name"]):
                    assert "value" not in e and "secretKeyRef" in e.get("valueFrom", {}), \
                        f"{e['name']}: credentials come from a Secret, never a literal"


def test_local_head_script_binds_localhost_and_auth_is_on():
    script = re.sub(r"\\\n", " ", (CLUSTER / "start_local_head.sh").read_text())  # join continued lines
    lines = [ln for ln in script.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    starts = _ray_start_lines(lines)
    assert starts and all(re.search(r"--dashboard-host[= ]127\.0\.0\.1(\s|$)", s) for s in starts), starts
    assert not any("0.0.0.0" in ln for ln in lines)
    assert any(re.search(r"\bRAY_AUTH_MODE=token\b", ln) for ln in lines)


# --------------------------------------------------------------------------------------------
# runtime_env


@pytest.mark.parametrize("name", sorted(_runtime_envs()))
def test_runtime_env_is_well_formed_and_holds_no_credential(name):
    env = _runtime_envs()[name]
    assert set(env) <= RUNTIME_ENV_KEYS, set(env) - RUNTIME_ENV_KEYS
    assert "working_dir" in env
    env_vars = env.get("env_vars", {})
    assert isinstance(env_vars, dict)
    for k, v in env_vars.items():
        assert isinstance(k, str) and isinstance(v, str), f"env_vars.{k}: {v!r} must be a string"
        assert not _secret_like(k), f"env_vars.{k}: no credentials in a runtime_env"
        assert not re.fullmatch(r"[A-Za-z0-9_\-+/=]{32,}", v), f"env_vars.{k}: looks like a secret"
    assert env_vars.get("WANDB_MODE") == "offline" and env_vars.get("TOKENIZERS_PARALLELISM") == "false"


def test_local_runtime_env_uploads_the_repo_without_bulk():
    env = _runtime_envs()["runtime_env.yaml"]
    assert env["working_dir"] == "."
    excludes = {e.strip("/") for e in env["excludes"]}
    assert {".venv", "runs", ".git", "wandb", "__pycache__"} <= excludes


def test_rayjob_runtime_env_brings_code_and_dependencies():
    env = _runtime_envs()["rayjob.yaml runtimeEnvYAML"]
    # the submitter pod has no checkout: the code comes as a zip from a URI
    assert re.match(r"^(https|s3|gs)://", env["working_dir"]) and env["working_dir"].endswith(".zip")

    def name(req: str) -> str:
        return re.split(r"[<>=!~\[;\s]", req, maxsplit=1)[0].lower().replace("_", "-")

    deps = {name(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    installed = {name(p) for p in env["pip"]}
    # ray comes with the image; deepspeed is not used by jobs.frontier (see the file's comment)
    assert deps - {"ray", "deepspeed"} <= installed, sorted(deps - {"ray", "deepspeed"} - installed)


def test_aws_nodes_install_the_project_and_share_the_run_directory():
    aws = _aws()
    repo = [remote for remote, local in aws["file_mounts"].items() if local in (".", "./")]
    assert repo, "the repository is synced to the nodes"
    setup = aws["setup_commands"]
    torch = [i for i, c in enumerate(setup) if re.search(r"pip install .*torch", c)]
    project = [i for i, c in enumerate(setup) if re.search(r"pip install -e \"?\.\[trl\]", c)]
    assert torch and project and torch[0] < project[0], "torch first, then the project"
    # the editable install runs in the synced directory (~ is the home of the image's `ray` user)
    home = "/home/ray" if aws.get("docker", {}).get("image") else "/home/" + aws["auth"]["ssh_user"]
    install = setup[project[0]].replace("~", home)
    assert any(re.search(rf"\bcd {re.escape(r)}(\s|;|&|$)", install) for r in repo), (install, repo)
    assert {".venv", "runs"} <= set(aws["rsync_exclude"])
    assert any("/mnt/runs:/mnt/runs" in o for o in aws["docker"]["run_options"])
    assert Path(_entrypoint_args().run_dir).is_relative_to("/mnt/runs")
