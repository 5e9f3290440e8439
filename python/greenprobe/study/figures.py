"""What the reports share about figures."""

from __future__ import annotations

import io


def png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (110 dpi, tight)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()
