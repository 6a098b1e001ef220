"""Markdown of a load run, a soak and the fetch comparison, for the console and BENCHMARKS.md."""

from __future__ import annotations

from typing import Any

from loadtest.load.summary import LoadReport

DEFINITIONS = (
    "Sustained rates count media finished (stored or dead-lettered), frames and vectors stored per second "
    "from 10% into the run to the last publish (fixed rate) or the last completion (as fast as possible). "
    "Latency runs from the generator's clock just before `produce` to the first tracker poll that saw "
    "sink-qdrant's committed offset past every vector batch of the media (stored media only; nearest-rank "
    "percentiles), so it is exact to within one poll interval ({poll:.2f} s) plus the reader's own delay; "
    "its hops use the Kafka timestamps the fetch and embed stages' producers gave a media's last frame and "
    "last vector batch (produce time, before the transaction commits). "
    "Lag is end offset minus the group's committed offset, summed over the stage's input partitions, "
    "sampled every {mon:.0f} s; peak memory is the kernel's high-water mark (VmHWM) of each process tree, "
    "model loading included."
)


def _fmt(value: float) -> str:
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"


def _load_line(profile: dict[str, Any]) -> str:
    rate = (
        f"{profile['rate']:g} media/s"
        if profile.get("rate")
        else f"as fast as possible ({profile['max_in_flight']} in flight)"
    )
    fails = ", ".join(f"{k} {v:.1%}" for k, v in profile.get("failures", {}).items() if v) or "none"
    lat = profile["latency"]
    return (
        f"{rate} for {profile['duration_s']:g} s; video segments {profile['video_share']:.0%} "
        f"({profile['video_segment_s']:g} s at {profile['video_fps']:g} fps); server latency lognormal median "
        f"{lat['median_s'] * 1000:.0f} ms (sigma {lat['sigma']:g}) with a Pareto tail (alpha {lat['tail_alpha']:g}, "
        f"{lat['tail_share']:.0%} of requests from {lat['tail_min_s']:g} s), capped at {lat['max_s']:g} s; "
        f"{profile['bandwidth_bps'] / 1e6:g} MB/s per response; planned failures: {fails}; "
        f"spaces: {', '.join(profile['spaces'])}"
    )


def _figures(r: LoadReport) -> list[str]:
    lat = r.latency_s
    rows = [
        "| figure | value |",
        "| --- | ---: |",
        f"| published (offered {r.offered_per_s:.2f} media/s) | {r.published:,} |",
        f"| stored / failed / unfinished | {r.stored:,} / {r.failed:,} / {r.unfinished:,} |",
        f"| sustained media/s | {_fmt(r.media_per_s)} |",
        f"| sustained frames/s | {_fmt(r.frames_per_s)} |",
        f"| sustained vectors/s | {_fmt(r.vectors_per_s)} |",
        f"| frames / vectors stored | {r.frames:,} / {r.vectors:,} |",
    ]
    if lat:
        rows.append(
            f"| latency publish -> stored p50 / p95 / p99 (max) | {lat['p50']:.2f} / {lat['p95']:.2f} / "
            f"{lat['p99']:.2f} s ({lat['max']:.2f} s) |"
        )
    rows += [f"| latency {hop}, p50 / p95 | {q['p50']:.2f} / {q['p95']:.2f} s |" for hop, q in r.hops_s.items()]
    rows += [
        f"| success rate (all / planned good) | {r.success_rate:.1%} / {r.planned_ok_success_rate:.1%} |",
        f"| unexpected outcomes | {r.unexpected} |",
        f"| drain after the last publish | {r.drain_s:.1f} s |",
    ]
    return rows


def _causes(r: LoadReport) -> list[str]:
    rows = ["| planned | outcome | media |", "| --- | --- | ---: |"]
    for fate, outcomes in r.causes_by_fate.items():
        rows += [f"| {fate} | {outcome} | {n:,} |" for outcome, n in outcomes.items()]
    return rows


def _lag_table(r: LoadReport, points: int = 10) -> list[str]:
    if not r.lag_series:
        return []
    stages = sorted({k for _, d in r.lag_series for k in d})
    step = max(1, len(r.lag_series) // points)
    rows = ["| t (s) | " + " | ".join(stages) + " |", "| ---: | " + " | ".join("---:" for _ in stages) + " |"]
    for t, lag in r.lag_series[::step]:
        rows.append(f"| {t:.0f} | " + " | ".join(str(lag.get(s, "")) for s in stages) + " |")
    rows.append("| final | " + " | ".join(str(r.final_lag.get(s, "")) for s in stages) + " |")
    return rows


def _memory(r: LoadReport) -> list[str]:
    rows = ["| process | peak RSS (MB) |", "| --- | ---: |"]
    rows += [f"| {name} | {mb:,.0f} |" for name, mb in sorted(r.peak_rss_mb.items())]
    return rows


def run_markdown(r: LoadReport, title: str, command: str, machine: str, env: str, violations: list[str]) -> str:
    verdict = "every budget holds" if not violations else "VIOLATED: " + "; ".join(violations)
    parts = [
        f"## {title}",
        "",
        f"`{command}` on {machine}; run `{r.run_id}`.",
        "",
        *([f"**Partial report** ({r.partial}): it covers less than the planned run.", ""] if r.partial else []),
        f"Load: {_load_line(r.profile)}. Stages: one worker each of fetch, embed, sink-qdrant.",
        "",
        *_figures(r),
        "",
        "Outcomes by plan (dead letters as `stage:error_class`):",
        "",
        *_causes(r),
        "",
        "Consumer lag (messages) over time:",
        "",
        *_lag_table(r),
        "",
        *_memory(r),
        "",
        f"Budgets `loadtest/budgets/{env}.json`: {verdict}.",
        "",
        DEFINITIONS.format(poll=r.poll_s, mon=r.monitor_s),
    ]
    return "\n".join(parts) + "\n"


def soak_markdown(r: LoadReport, trends: dict[str, dict[str, float]], plot: str) -> str:
    """The soak's flatness table, appended to its run markdown."""
    rows = [
        "",
        f"Flatness after the first 20% of the soak (least-squares slope per hour; medians of the first and "
        f"last tenth). Plot: `{plot}`.",
        "",
        f"![soak: throughput, lag and memory over time]({plot})",
        "",
        "| process | RSS first -> last (MB) | RSS slope (MB/h) | RSS slope, last half (MB/h) "
        "| lag first -> last | lag slope (/h) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in sorted(trends["rss_growth_mb_per_h"]):
        lag = "- | -"
        if name in trends["lag_growth_per_h"]:
            first, last = trends["lag_first"][name], trends["lag_last"][name]
            lag = f"{first:.0f} -> {last:.0f} | {trends['lag_growth_per_h'][name]:+.0f}"
        late = trends.get("rss_late_growth_mb_per_h", {}).get(name)
        rows.append(
            f"| {name} | {trends['rss_first_mb'][name]:.0f} -> {trends['rss_last_mb'][name]:.0f} | "
            f"{trends['rss_growth_mb_per_h'][name]:+.1f} | {'-' if late is None else f'{late:+.1f}'} | {lag} |"
        )
    return "\n".join(rows) + "\n"
