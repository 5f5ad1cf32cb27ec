"""``python -m jobs.active``: active learning of the proxy -- ensemble disagreement (and margin)
against random acquisition at the same label budget per round.

Runs the stages it needs (task, SFT, pools, labels, the members' LM; cached, shared with
``jobs.frontier`` when given its run directory or the same config), then rounds of (train an
ensemble on the labelled pairs -> measure held-out accuracy, ECE and best-of-n gold -> acquire the
next pairs). Writes ``active.json``, ``active.png``, ``active.md`` / ``active.html`` in the run
directory (default: ``runs/frontier-<config hash>``, the main job's). Settings: the config's
``active`` section (``orchestrator/config/active.py``).
"""

from __future__ import annotations

import sys

from orchestrator.run.main import active_main


def main(argv: list[str] | None = None) -> int:
    return active_main(argv, "python -m jobs.active", __doc__)


if __name__ == "__main__":
    sys.exit(main())
