"""How numbers read in messages, tables and the dashboard: one spelling for counts and durations."""

from __future__ import annotations


def human_count(n: int | float) -> str:
    """``22718221`` -> ``22.7M``, ``250000`` -> ``250k``, ``950`` -> ``950`` (three significant digits)."""
    n = float(n)
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{int(n)}"


def fmt_seconds(s: float) -> str:
    """``42 s``, ``3.5 min``, ``1.20 h``."""
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"
