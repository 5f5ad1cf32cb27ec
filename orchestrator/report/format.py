"""Numbers as the report prints them."""

from __future__ import annotations


def png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (the report's plots are inlined into HTML)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def fmt(x, nd=3) -> str:
    """A float to ``nd`` decimals; ``None`` (a fit without a peak) spelled out."""
    if x is None:
        return "none (no peak)"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)
