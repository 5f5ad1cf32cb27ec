"""Config: every shipped YAML validates; unknown keys and bad values are rejected by name."""

from pathlib import Path

import pytest

from orchestrator.config.schema import (
    ConfigError,
    FrontierConfig,
    config_digest,
    digest,
    load,
    parse_overrides,
    validate_resources,
)

# job configs; constitution.yaml beside them is the RLAIF judge's principles, not a job config
CONFIGS = sorted(p for p in Path("jobs/configs").glob("*.yaml") if p.name != "constitution.yaml")


def test_configs_exist():
    names = {p.name for p in CONFIGS}
    assert {"default.yaml", "smoke.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load(FrontierConfig, path)
    assert cfg.n_max <= cfg.sample.bon_responses_per_prompt


def test_shipped_constitution_loads():
    from actors.ai_labeler import load_constitution

    principles, shots = load_constitution("jobs/configs/constitution.yaml")
    assert {p["name"] for p in principles} == {"helpful", "harmless", "honest", "format"} and len(shots) >= 2


def _leaves(obj, prefix=""):
    """Dotted leaf name -> JSON-plain value of a config tree (dataclass fields; a dict-typed field
    such as ``resources`` is one leaf)."""
    import dataclasses
    import json

    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            out.update(_leaves(v, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = json.loads(json.dumps(v))  # tuples -> lists
    return out


def _written(tree, sections, prefix=""):
    """Dotted keys -> values the YAML writes; ``sections`` are the dotted names of config sections
    (a mapping under a section name is descended into, any other value is a leaf)."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and prefix + k in sections:
            out.update(_written(v, sections, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def test_defaults_equal_default_yaml_except_where_written():
    """default.yaml against the dataclass defaults: every key it writes exists (as a leaf, not a
    section), and the loaded config differs from ``FrontierConfig()`` only at keys it writes, where
    it holds exactly the written value; every other leaf is the dataclass default."""
    from orchestrator.config.loading import load_yaml

    defaults = _leaves(FrontierConfig())
    sections = {k.rsplit(".", i)[0] for k in defaults for i in range(1, k.count(".") + 1)}
    written = _written(load_yaml("jobs/configs/default.yaml"), sections)
    loaded = _leaves(load(FrontierConfig, "jobs/configs/default.yaml"))
    assert set(loaded) == set(defaults)
    assert sorted(set(written) - set(defaults)) == [], "keys default.yaml writes that the config lacks"
    for key, default in defaults.items():
        want = written.get(key, default)
        if isinstance(default, float) and isinstance(want, (int, float, str)):
            want = float(want)  # 0 / 1e-4 in YAML for a float field
        assert loaded[key] == want, (key, loaded[key], want, "written" if key in written else "not written")
    # the differences from the defaults are the written values (some written values equal the default)
    diff = {k for k in defaults if loaded[k] != defaults[k]}
    assert diff <= set(written) and len(diff) >= 10, sorted(diff)


def test_overrides_apply_and_parse_types():
    cfg = load(FrontierConfig, "jobs/configs/smoke.yaml", ["seed=7", "sft.lr=0.01", "proxy.sizes=[1x8,2x16]"])
    assert cfg.seed == 7 and cfg.sft.lr == 0.01 and cfg.proxy.sizes == ("1x8", "2x16")


@pytest.mark.parametrize("overrides, key", [
    (["sft.stepz=3"], "sft.stepz"),
    (["bogus=1"], "bogus"),
    (["sft.steps=-1"], "sft.steps"),
    (["sft.steps=abc"], "sft.steps"),
    (["sft.lr=-1"], "sft.lr"),
    (["sample.bon_responses_per_prompt=8", "bon.n_max=16"], "bon.n_max"),
    (["proxy.sizes=[2x30]"], "proxy.sizes[0]"),
    (["proxy.sizes=[big]"], "proxy.sizes[0]"),
    (["proxy.sizes=[]"], "proxy.sizes"),
    (["label.noise_rate=0.7"], "label.noise_rate"),
    (["sample.label_responses_per_prompt=1"], "sample.label_responses_per_prompt"),
    (["sft.policy.size=2x130"], "sft.policy.n_head"),
    (["cluster.generator.replicas=0"], "cluster.generator.replicas"),
    (["seed=-1"], "seed"),
    (["sft=3"], "sft"),
    (["cluster.dashboard=maybe"], "cluster.dashboard"),
])
def test_bad_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as e:
        load(FrontierConfig, "jobs/configs/smoke.yaml", overrides)
    assert str(e.value).startswith(key + ":"), str(e.value)


def test_malformed_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("seed: [1, 2\nsft: {")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load(FrontierConfig, p)


def test_missing_file():
    with pytest.raises(ConfigError, match="no such file"):
        load(FrontierConfig, "nope.yaml")


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_overrides(["justakey"])


def test_config_is_frozen_and_hash_stable():
    a = load(FrontierConfig, "jobs/configs/smoke.yaml")
    b = load(FrontierConfig, "jobs/configs/smoke.yaml")
    assert digest(a) == digest(b)
    assert digest(a) != digest(load(FrontierConfig, "jobs/configs/smoke.yaml", ["seed=1"]))
    with pytest.raises(Exception):
        a.seed = 3


def test_run_hash_ignores_fields_left_at_their_defaults():
    """The run's hash (default run directory, frontier.json) covers what the config chose, so a field
    added later with a default does not rename or orphan existing runs; choosing it does."""
    from orchestrator.config.schema import config_digest, non_default

    assert non_default(FrontierConfig()) == {}
    a = load(FrontierConfig, "jobs/configs/default.yaml")
    assert config_digest(a) == config_digest(load(FrontierConfig, "jobs/configs/default.yaml", ["proxy.seed_members=0"]))
    assert config_digest(a) != config_digest(load(FrontierConfig, "jobs/configs/default.yaml", ["proxy.seed_members=3"]))
    assert config_digest(a) != config_digest(load(FrontierConfig, "jobs/configs/default.yaml", ["rl.steps=61"]))
    assert non_default(load(FrontierConfig, None, ["rl.steps=61"])) == {"rl": {"steps": 61}}


@pytest.mark.parametrize("over, key", [
    (["proxy.seed_members=3", "rl.sizes=[2x64]"], "proxy.seed_member_size"),
    (["proxy.seed_members=3", "sweep.kl_coefs=[0.1]"], "proxy.seed_members"),
    (["proxy.seed_members=3", "proxy.seed_member_size=1x9"], "proxy.seed_member_size"),
    (["proxy.seed_members=-1"], "proxy.seed_members")])
def test_seed_ensemble_config_errors_name_the_key(over, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load(FrontierConfig, "jobs/configs/default.yaml", over)


def test_resources_the_cluster_lacks():
    cfg = load(FrontierConfig, "jobs/configs/smoke.yaml", ["cluster.learner.num_gpus=1"])
    with pytest.raises(ConfigError, match="cluster.learner.num_gpus"):
        validate_resources(cfg, {"CPU": 2.0})


def test_quick_profile_is_the_default_with_its_four_cuts():
    """quick.yaml is default.yaml at about half the compute: it differs in exactly the keys its header
    names (SFT steps, RL steps, the KL coefficients, the late-evaluation schedule it no longer
    reaches), so a change to the default cannot leave the profile measuring something else."""
    default = _leaves(load(FrontierConfig, "jobs/configs/default.yaml"))
    quick = _leaves(load(FrontierConfig, "jobs/configs/quick.yaml"))
    diff = sorted(k for k in default if default[k] != quick[k])
    assert diff == ["rl.eval_every_late", "rl.eval_late_from", "rl.steps", "sft.steps", "sweep.kl_coefs"], diff
    assert (quick["sft.steps"], quick["rl.steps"], quick["sweep.kl_coefs"]) == (750, 40, [0.0, 0.1])


def test_config_digest_ignores_analysis_keys_unless_they_shape_the_runs():
    """jobs.active's settings and the monitor's threshold rules score a finished run's stages: changing
    them reuses the run directory; with a monitor stopper the rules end trials, and they count."""
    base = config_digest(load(FrontierConfig, "jobs/configs/smoke.yaml"))
    for o in (["active.rounds=5"], ["monitor.entropy.threshold=0.5"], ["monitor.kl_acceleration.patience=3"]):
        assert config_digest(load(FrontierConfig, "jobs/configs/smoke.yaml", o)) == base, o
    for o in (["monitor.disjoint_size="], ["rl.steps=7"],
              ["sweep.stopper.enabled=true", "sweep.stopper.metric=monitor/entropy"]):
        assert config_digest(load(FrontierConfig, "jobs/configs/smoke.yaml", o)) != base, o
    stop = ["sweep.stopper.enabled=true", "sweep.stopper.metric=monitor/entropy"]
    assert config_digest(load(FrontierConfig, "jobs/configs/smoke.yaml", stop)) != \
        config_digest(load(FrontierConfig, "jobs/configs/smoke.yaml", stop + ["monitor.entropy.threshold=0.5"]))
