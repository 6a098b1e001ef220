"""Whether memory and lag stay flat over a soak, and the plot of throughput, lag and memory.

Flatness is a least-squares slope per hour over the samples after the first :data:`SETTLE` of the
run (model loading, caches and connection pools fill at the start), plus the median of the first
and last tenth of those samples, so a reader sees the size of a drift, not only its sign. The
slope over the last half of those samples on its own tells a leak (it keeps the whole slope) from
memory that levels off (it falls towards zero).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from loadtest.load.summary import LoadReport

if TYPE_CHECKING:
    from matplotlib.axes import Axes

SETTLE = 0.2  # share of the soak left out before fitting trends


def slope_per_h(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per hour (0 for fewer than 2 points)."""
    if len(points) < 2:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 3600


def _settled(series: list[tuple[float, dict[str, float]]]) -> list[tuple[float, dict[str, float]]]:
    if not series:
        return []
    end = series[-1][0]
    return [(t, v) for t, v in series if t >= SETTLE * end]


def trends(report: LoadReport) -> dict[str, dict[str, float]]:
    """Per stage: RSS and lag slopes per hour, first/last medians, after the settling share."""
    rss = _settled(report.rss_series)
    lag = _settled([(t, {k: float(v) for k, v in d.items()}) for t, d in report.lag_series])
    out: dict[str, dict[str, float]] = {
        "rss_growth_mb_per_h": {},
        "rss_late_growth_mb_per_h": {},
        "rss_first_mb": {},
        "rss_last_mb": {},
        "lag_growth_per_h": {},
        "lag_late_growth_per_h": {},
        "lag_first": {},
        "lag_last": {},
    }
    for prefix, series in (("rss", rss), ("lag", lag)):
        names = sorted({k for _, d in series for k in d})
        tenth = max(1, len(series) // 10)
        for name in names:
            points = [(t, d[name]) for t, d in series if name in d]
            growth = "rss_growth_mb_per_h" if prefix == "rss" else "lag_growth_per_h"
            late = "rss_late_growth_mb_per_h" if prefix == "rss" else "lag_late_growth_per_h"
            first, last = ("rss_first_mb", "rss_last_mb") if prefix == "rss" else ("lag_first", "lag_last")
            out[growth][name] = slope_per_h(points)
            out[late][name] = slope_per_h(points[len(points) // 2 :])
            out[first][name] = statistics.median(v for _, v in points[:tenth])
            out[last][name] = statistics.median(v for _, v in points[-tenth:])
    return out


def plot(report: LoadReport, path: Path) -> Path:
    """Three panels over time: stored media/s and frames/s, lag per stage, RSS per stage."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, (top, mid, low) = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    minutes = [t / 60 for t, _, _ in report.throughput_series]
    top.plot(minutes, [m for _, m, _ in report.throughput_series], label="media stored/s")
    top.plot(minutes, [f for _, _, f in report.throughput_series], label="frames stored/s", alpha=0.7)
    if report.profile.get("rate"):
        top.axhline(float(report.profile["rate"]), color="grey", linestyle="--", label="offered media/s")
    top.set_ylabel("per second")
    top.set_title(f"soak {report.run_id}: throughput, consumer lag, memory")
    _lines(mid, report.lag_series, "messages behind")
    _lines(low, report.rss_series, "RSS (MB)")
    low.set_xlabel("minutes since the first publish")
    for ax in (top, mid, low):
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _lines(ax: Axes, series: Sequence[tuple[float, Mapping[str, float]]], label: str) -> None:
    names = sorted({k for _, d in series for k in d})
    for name in names:
        points = [(t / 60, d[name]) for t, d in series if name in d]
        ax.plot([p[0] for p in points], [p[1] for p in points], label=name)
    ax.set_ylabel(label)
