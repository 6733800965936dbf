"""Log-log arithmetic over sequence lengths: extrapolating a measured quantity to the next length (to
skip a run predicted too slow or too large) and interpolating where ours overtakes another method."""

from __future__ import annotations

import math
from typing import Any


def predict(points: list[tuple[int, float]], length: int, min_slope: float, max_slope: float = 2.2) -> float | None:
    """Extrapolate ``value(length)`` log-log from measured (L, value) points, slope clamped."""
    points = [(x, y) for x, y in points if y and y > 0 and math.isfinite(y)]
    if not points:
        return None
    x1, y1 = points[-1]
    slope = min_slope
    if len(points) >= 2:
        x0, y0 = points[-2]
        if x1 != x0:
            slope = math.log(y1 / y0) / math.log(x1 / x0)
    slope = min(max(slope, min_slope), max_slope)
    return y1 * (length / x1) ** slope


def crossover(rows: list[dict[str, Any]], dtype: str, direction: str, other: str = "sdpa") -> dict[str, Any]:
    """Length where ours (fwd+bwd) becomes faster than ``other``, interpolated log-log."""
    by = {(r["method"], r["length"]): r for r in rows if r["dtype"] == dtype and r["direction"] == direction and r["status"] == "ok"}
    lengths = sorted({n for (mth, n) in by if mth == "ours"} & {n for (mth, n) in by if mth == other})
    if not lengths:
        return {"length": None, "note": "no common measurements"}
    logr = [math.log(by[("ours", n)]["fwd_bwd"]["median_s"] / by[(other, n)]["fwd_bwd"]["median_s"]) for n in lengths]
    if all(x < 0 for x in logr):
        return {"length": None, "note": f"ours already faster at the smallest length measured ({lengths[0]})", "below": lengths[0]}
    if logr[-1] >= 0:
        return {"length": None, "note": f"ours not faster up to L={lengths[-1]}", "above": lengths[-1]}
    # last sign change from >= 0 to < 0 (after which ours stays faster)
    i = max(j for j in range(len(logr)) if logr[j] >= 0)
    x0, x1 = math.log(lengths[i]), math.log(lengths[i + 1])
    y0, y1 = logr[i], logr[i + 1]
    x = x0 + (0 - y0) * (x1 - x0) / (y1 - y0)
    return {"length": round(math.exp(x)), "between": [lengths[i], lengths[i + 1]],
            "note": f"interpolated log-log between L={lengths[i]} and {lengths[i + 1]}"}
