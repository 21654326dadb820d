"""Cell formats shared by the compare table (:mod:`.table`) and the sections after it (:mod:`.sections`)."""

from __future__ import annotations

DASH = "—"


def pct(v: float | None, std: float | None = None) -> str:
    if v is None:
        return DASH
    return f"{100 * v:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def pp(v: float | None) -> str:
    return DASH if v is None else f"{100 * v:+.2f}"


def p_value(v: float | None, n_resamples: int) -> str:
    if v is None:
        return DASH
    if v == 0:
        return f"<{1 / max(n_resamples, 1):.2g}"
    return f"{v:.3f}" if v >= 0.001 else f"{v:.1e}"
