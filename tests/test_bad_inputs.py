"""The bad-input matrix (cluster-operations issue): malformed configs and data files, each given to
``jobs.frontier``'s entry point with a user's argv. Every case exits 2 with one line on stderr naming
the key, row or file, and the existing run directory it points at is left exactly as it was (no file
added, changed or removed).

The cases run in-process through ``jobs.frontier.main`` (the function ``python -m jobs.frontier``
calls): a subprocess per case cost ~8 s of interpreter start and imports, 3 minutes for the matrix.
``test_cli.py`` runs the same kind of error through ``python -m`` and checks the process's exit code.
Every case must be refused before Ray starts: a tripwire on ``init_ray`` fails the case otherwise.
The config cases need only a run directory holding a config; the cases of damaged stage files need
the smoke run's finished stages (slow).
"""

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from orchestrator.config.schema import FrontierConfig, load
from orchestrator.run.cli import save_config

ROOT = Path(__file__).resolve().parents[1]
SMOKE = "jobs/configs/smoke.yaml"


def _stage_file(d: Path, pattern: str) -> Path:
    """The first match in a finished stage of the job's own (not the monitor's label halves)."""
    def own(p: Path) -> bool:
        done = next((q / "DONE.json" for q in p.parents if q.parent.name == "stages"), None)
        return done is None or not done.is_file() or '"label-half"' not in done.read_text()
    return sorted(p for p in d.glob(f"stages/*/{pattern}") if ".tmp" not in str(p) and own(p))[0]


def _edit_parquet(path: Path, fn) -> None:
    t = pq.read_table(path).to_pydict()
    pq.write_table(pa.table(fn(t)), path)


def _drop(col):
    return lambda t: {k: v for k, v in t.items() if k != col}


def _nan_label(t):
    t["p_a"] = list(t["p_a"])
    t["p_a"][3] = float("nan")
    return t


def _model_dir(tmp: Path, weights: str) -> Path:
    """A save_pretrained-like directory whose weights are ``weights``: a pickle or a truncated file."""
    m = tmp / "model"
    m.mkdir()
    (m / "config.json").write_text('{"model_type": "gpt2"}')
    if weights == "pickle":
        torch.save({"w": torch.zeros(2)}, m / "pytorch_model.bin")
    elif weights == "pickle-as-safetensors":
        torch.save({"w": torch.zeros(2)}, m / "model.safetensors")
    elif weights == "truncated":
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(1000)}, str(m / "model.safetensors"))
        data = (m / "model.safetensors").read_bytes()
        (m / "model.safetensors").write_bytes(data[:40])
    return m


def _adopt(overrides):
    """The existing run is one of this (valid) config: the job gets past the run-dir check and
    must find the bad input itself."""
    def setup(d: Path, tmp: Path):
        save_config(load(FrontierConfig, SMOKE, overrides), _fresh_config(d))
        return overrides
    return setup


def _adopt_model(weights):
    def setup(d: Path, tmp: Path):
        over = [f"sft.policy.path={_model_dir(tmp, weights)}"]
        save_config(load(FrontierConfig, SMOKE, over), _fresh_config(d))
        return over
    return setup


def _fresh_config(d: Path) -> Path:
    (d / "config.yaml").unlink()
    return d


# (case id, argv after the run dir, run-dir setup (run dir, tmp) -> None or extra args, needle in the one line)
CASES = [
    ("unknown key", ["rl.stepz=3"], None, "rl.stepz: unknown key"),
    ("wrong type", ["rl.steps=many"], None, "rl.steps: expected an integer"),
    ("negative size", ["sample.bon_prompts=-4"], None, "sample.bon_prompts"),
    ("zero steps", ["rl.steps=0"], None, "rl.steps"),
    ("minibatches do not divide the batch", ["rl.minibatches=3"], None, "rl.minibatches"),
    ("KL target of 0", ["rl.kl_controller=adaptive", "rl.kl_target=0"], None, "rl.kl_target"),
    ("KL horizon of 0", ["rl.kl_horizon=0"], None, "rl.kl_horizon"),
    ("unknown KL controller", ["rl.kl_controller=pid"], None, "rl.kl_controller"),
    ("width not divisible by heads", ["proxy.sizes=[2x30]"], None, "proxy.sizes[0]"),
    ("non-positive CPUs", ["cluster.rl.generator.num_cpus=0"], None, "cluster.rl.generator.num_cpus"),
    ("GPUs the cluster lacks", [], _adopt(["cluster.learner.num_gpus=1", "cluster.num_cpus=2"]),
     "cluster.learner.num_gpus"),
    ("custom resource the cluster lacks", [], _adopt(["cluster.rl.generator.resources={rollout_node: 0.5}",
                                                      "cluster.num_cpus=2"]),
     "cluster.rl.generator.resources.rollout_node"),
    ("proxy-keyed stopper", ["sweep.stopper.enabled=true", "sweep.stopper.metric=eval/proxy"], None,
     "sweep.stopper.metric"),
    ("another config in the run dir", ["seed=7"], None, "holds a run of another config"),
    ("model path that does not exist", [], _adopt(["sft.policy.path=/nonexistent/policy"]), "sft.policy.path"),
    ("pickled model weights", [], _adopt_model("pickle"), "pytorch_model.bin are pickled"),
    ("pickle named .safetensors", [], _adopt_model("pickle-as-safetensors"), "model.safetensors"),
    ("truncated model weights", [], _adopt_model("truncated"), "not a valid safetensors file"),
    ]

# cases of a damaged finished stage: the run is resumed (the smoke run's stages, copied)
STAGE_CASES = [
    ("labels missing a column", ["--resume"],
     lambda d, t: _edit_parquet(_stage_file(d, "preferences.parquet"), _drop("p_a")), "missing column 'p_a'"),
    ("NaN label", ["--resume"],
     lambda d, t: _edit_parquet(_stage_file(d, "preferences.parquet"), _nan_label), "column 'p_a' row 3 is NaN"),
    ("prompts file not parquet", ["--resume"],
     lambda d, t: _stage_file(d, "prompts.parquet").write_bytes(b"PAR1 garbage"), "prompts.parquet"),
    ("truncated proxy weights", ["--resume"],
     lambda d, t: (lambda f: f.write_bytes(f.read_bytes()[:100]))(_stage_file(d, "*/model.safetensors")),
     "model.safetensors"),
    ("stage record unreadable", ["--resume"],
     lambda d, t: _stage_file(d, "DONE.json").write_text("{not json"), "DONE.json"),
]


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns) for p in d.rglob("*")}


def _existing(d: Path, stages: Path | None) -> Path:
    """An existing run directory: its config (the smoke profile's) and, given, finished stages."""
    d.mkdir(parents=True)
    if stages is not None:
        shutil.copytree(stages, d / "stages", ignore=shutil.ignore_patterns("*.tmp"))
    else:  # a file of the user's: the snapshot covers more than the config
        (d / "notes.txt").write_text("my run\n")
    save_config(load(FrontierConfig, SMOKE), d)
    return d


@pytest.fixture(scope="module")
def existing_stages(smoke_run, tmp_path_factory):
    """An existing run directory with the smoke run's finished stages and its config."""
    return _existing(tmp_path_factory.mktemp("existing") / "run", smoke_run[1] / "stages")


def test_matrix_has_at_least_15_cases():
    cases = CASES + STAGE_CASES
    assert len(cases) >= 15 and len({c[0] for c in cases}) == len(cases)


def _refused(d: Path, tmp: Path, argv, setup, needle, case, capsys, monkeypatch) -> None:
    import jobs.frontier
    import orchestrator.run.main as main

    def tripwire(*a, **k):
        raise AssertionError(f"{case}: got past validation, Ray was about to start")

    monkeypatch.setattr(main, "init_ray", tripwire)
    monkeypatch.chdir(ROOT)
    got = setup(d, tmp) if setup else None
    extra = got if isinstance(got, list) else []
    before = _snapshot(d)
    args = [*argv, *extra]
    resume = "--resume" in args
    args = [a for a in args if a != "--resume"]
    cmd = ["--run-dir", str(d), "--quiet"] + (["--resume", *args] if resume else ["--config", SMOKE, *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        jobs.frontier.main(cmd)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert e.value.code == 2, (case, e.value.code, err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], (case, err[-2000:])
    assert _snapshot(d) == before, f"{case}: the run directory changed"


@pytest.mark.parametrize("case, argv, setup, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_naming_it_and_leaves_the_run_dir(case, argv, setup, needle, tmp_path, capsys,
                                                            monkeypatch):
    d = _existing(tmp_path / "run", None)
    _refused(d, tmp_path, argv, setup, needle, case, capsys, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("case, argv, setup, needle", STAGE_CASES, ids=[c[0] for c in STAGE_CASES])
def test_damaged_stage_exits_2_naming_it_and_leaves_the_run_dir(case, argv, setup, needle, existing_stages,
                                                                tmp_path, capsys, monkeypatch):
    d = tmp_path / "run"
    shutil.copytree(existing_stages, d)
    _refused(d, tmp_path, argv, setup, needle, case, capsys, monkeypatch)
