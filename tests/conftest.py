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


# fixtures that run a pipeline (minutes): a test using one belongs to the slow tier
SLOW_FIXTURES = ("smoke_run",)


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
