"""Progress of long work: a bar on a terminal, and a line in the log at least every ``every``
seconds whatever the terminal (``job.log``, ``ray job logs``), so a run in a log file never sits
silent for minutes. ``as_completed`` waits on Ray object refs with both, and can poll the actors
doing the work for finer progress (their ``progress()`` method, answered by a second actor thread
while the work runs)."""

from __future__ import annotations

import logging
import time

import ray
from tqdm import tqdm

log = logging.getLogger("rlhf_frontier")

EVERY_S = 30.0


class Progress:
    """``total`` units of work named ``desc``: ``advance`` / ``set`` them, ``detail`` says more."""

    def __init__(self, desc: str, total: int, bar: bool, every: float = EVERY_S, unit: str = "it"):
        self.desc, self.total, self.every = desc, total, every
        self.done, self.detail = 0, ""
        self.t0 = self._last = time.monotonic()
        self.bar = tqdm(total=total, desc=desc, disable=not bar, leave=False, unit=unit)

    def set(self, done: int | None = None, detail: str | None = None) -> None:
        if done is not None and done != self.done:
            self.bar.update(done - self.done)
            self.done = done
        if detail is not None and detail != self.detail:
            self.detail = detail
            self.bar.set_postfix_str(detail, refresh=False)
        self.bar.refresh()
        self.tick()

    def advance(self, n: int = 1) -> None:
        self.set(self.done + n)

    def tick(self) -> None:
        """Log a line if ``every`` seconds passed since the last one."""
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            log.info("%s: %d/%d%s (%.0f s)", self.desc, self.done, self.total,
                     f"; {self.detail}" if self.detail else "", now - self.t0)

    def close(self) -> None:
        self.bar.close()


def _fmt(name: str, p: dict) -> str:
    if not p:
        return f"{name} waiting"
    s = f"{name} {p.get('what', 'step')} {p.get('done', 0)}/{p.get('total', '?')}"
    return s + (f" loss {p['loss']:.3f}" if isinstance(p.get("loss"), float) else "")


def as_completed(refs: list, desc: str, progress: bool, poll: dict | None = None, every: float = EVERY_S):
    """Yield the object refs as they finish (raising a failed call's error there), with a
    ``Progress``. ``poll``: {label: actor handle} whose ``progress()`` -> {what, done, total, loss}
    is shown beside the count of finished calls."""
    pending = list(refs)
    p = Progress(desc, len(pending), progress, every)
    asked: dict[str, object] = {}
    seen: dict[str, dict] = {}
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            if ready:
                ray.get(ready[0])
                p.advance()
                yield ready[0]
            if poll:
                for label, actor in list(poll.items()):
                    if label not in asked:
                        asked[label] = actor.progress.remote()
                done, _ = ray.wait(list(asked.values()), num_returns=len(asked), timeout=0)
                for label in [k for k, r in asked.items() if r in done]:
                    try:
                        seen[label] = ray.get(asked.pop(label))
                    except Exception:  # noqa: BLE001  (the actor finished and was shut down)
                        poll.pop(label, None)
                        seen.pop(label, None)
                running = [_fmt(k, v) for k, v in seen.items() if v and v.get("done", 0) < v.get("total", 0)]
                p.set(detail=", ".join(running))
            else:
                p.tick()
    finally:
        p.close()


def wait(refs: list, desc: str, progress: bool, poll: dict | None = None) -> list:
    """``ray.get`` of ``refs`` (in their order) with ``as_completed``'s progress."""
    for _ in as_completed(refs, desc, progress, poll):
        pass
    return ray.get(refs)
