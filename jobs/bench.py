"""``python -m jobs.bench {frontier,rl,label,sync,serve,gpu}``: benchmarks (``orchestrator/run/bench.py`` says what each
measures, ``orchestrator/run/bench_gpu.py`` the GPU profile; ``--help`` prints it)."""

from __future__ import annotations

import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["gpu"]:  # torch and transformers only: the GPU machine has no Ray
        from orchestrator.run.bench_gpu import main as gpu_main

        sys.exit(gpu_main(sys.argv[2:]))
    from orchestrator.run.bench import main

    sys.exit(main())
