"""``python -m jobs.bench {frontier,rl,label}``: benchmarks (``orchestrator/run/bench.py`` says what each measures;
``--help`` prints it)."""

from __future__ import annotations

import sys

from orchestrator.run.bench import main

if __name__ == "__main__":
    sys.exit(main())
