import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (ray.init costs ~5 s), like Ray's own fixtures."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def smoke_run(ray_session, tmp_path_factory):
    """The smoke profile run once, in-process on the shared Ray; tests read its outputs."""
    from orchestrator.config.schema import FrontierConfig, load
    from orchestrator.run.pipeline import run_frontier

    cfg = load(FrontierConfig, "jobs/configs/smoke.yaml")
    run_dir = tmp_path_factory.mktemp("smoke")
    frontier = run_frontier(cfg, run_dir, progress=False)
    return cfg, run_dir, frontier


EXTENDED = ["proxy.holdout_families=[capital]", "generalization.length_controls=[regress,head]",
            "generalization.length_control_sizes=[1x8]", "generalization.finetune_budgets=[0,20]"]
"""Issue 21's options (a held-out family, length-controlled proxies, fine-tuning budgets) added to
``jobs/configs/pareto-smoke.yaml`` (issue 22's smoke sweep): one run for both issues' e2e tests."""


@pytest.fixture(scope="session")
def extended_smoke_run(smoke_run, tmp_path_factory):
    """The smoke run's stages reused, then ``jobs/configs/pareto-smoke.yaml`` (the smoke profile plus
    per-principle proxies and their fixed, learned, per-family and constrained trials) with
    ``EXTENDED``'s options, in one more run."""
    import shutil

    from orchestrator.config.schema import FrontierConfig, load
    from orchestrator.run.pipeline import run_frontier

    _, run0, _ = smoke_run
    run_dir = tmp_path_factory.mktemp("smoke-extended")
    shutil.copytree(run0 / "stages", run_dir / "stages")
    cfg = load(FrontierConfig, "jobs/configs/pareto-smoke.yaml", EXTENDED)
    return cfg, run_dir, run_frontier(cfg, run_dir, progress=False)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """``tiny:`` references (``orchestrator.nn.tiny``) built into the module's own cache directory
    (nothing shared): a function from reference to local path."""
    from orchestrator.nn import tiny

    cache = tmp_path_factory.mktemp("xdg")
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(cache))
    yield lambda ref: tiny.resolve(ref)
    mp.undo()


# fixtures that run a pipeline (minutes): a test using one belongs to the slow tier
SLOW_FIXTURES = ("smoke_run", "extended_smoke_run")


def pytest_collection_modifyitems(config, items):
    """The quick tier (``-m "not slow"``) must stay quick: a test that uses the smoke run and is not
    marked ``slow`` is a collection error, not a silent 3-minute pipeline in the quick loop."""
    bad = [i.nodeid for i in items
           if any(f in getattr(i, "fixturenames", ()) for f in SLOW_FIXTURES) and i.get_closest_marker("slow") is None]
    if bad:
        raise pytest.UsageError("tests using the smoke run must be marked slow:\n  " + "\n  ".join(bad))


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    """A tiny random Llama policy saved to a fresh cache (``tiny:llama-2x32``): the learner tests' model."""
    from orchestrator.nn import tiny

    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg")))
    yield tiny.resolve("tiny:llama-2x32")
    mp.undo()
