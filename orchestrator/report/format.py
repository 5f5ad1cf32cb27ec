"""Numbers as the report prints them."""

from __future__ import annotations


def fmt(x, nd=3) -> str:
    """A float to ``nd`` decimals; ``None`` (a fit without a peak) spelled out."""
    if x is None:
        return "none (no peak)"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)
