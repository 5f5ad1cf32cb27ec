"""Benchmarks; the last line of output is one JSON object.

``python -m jobs.bench frontier``: wall time, phase breakdown and peak memory of the main job. Runs
``jobs.frontier`` in this process on a fresh run directory (no cached stage) while a thread samples
the proportional set size (PSS) of this process and every descendant (the local Ray's GCS, raylet
and workers), so shared memory is not counted twice.

``python -m jobs.bench rl``: samples/s and tokens/s of the RL loop, time per phase, the overhead of
the Ray-actor version against the same loop with every role in this process, and -- when ``trl`` is
installed -- TRL's RLOO trainer on the same model, reward model, prompts and batch, side by side.
"""

from __future__ import annotations

import sys

from orchestrator.run.bench import main

if __name__ == "__main__":
    sys.exit(main())
