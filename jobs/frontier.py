"""``python -m jobs.frontier``: the overoptimization frontier on the embedded default (or any config).

task -> SFT -> response pools -> gold labels -> proxies of several sizes -> best-of-n -> Gao fits ->
frontier.json, bon.png, report.md / report.html in the run directory.
"""

from __future__ import annotations

import sys

from orchestrator.run.main import frontier_main


def main(argv: list[str] | None = None) -> int:
    return frontier_main(argv, "python -m jobs.frontier", __doc__, "frontier")


if __name__ == "__main__":
    sys.exit(main())
