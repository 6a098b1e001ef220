"""Budgets per environment, checked in as ``loadtest/budgets/<environment>.json``.

A budget file names its environment, the load its budgets are for (``load``: a
:class:`~loadtest.load.profile.LoadProfile`) and the budgets of a fixed-rate run (``budgets``);
then, for each other mode (:data:`MODES`: ``fast``, as fast as possible, and ``soak``), an object
with ``load`` overrides and that mode's ``budgets``. Each budget is a bound on one measured
figure (:data:`BOUNDS`); a per-stage bound is an object ``{stage: bound}``. An unknown key is an
error, so a misspelt budget never passes silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.load.profile import LoadProfile
from loadtest.load.summary import LoadReport

BUDGET_DIR = Path(__file__).resolve().parent.parent / "budgets"

# budget key -> (measured figure, direction): "min" means measured >= bound, "max" measured <= bound
BOUNDS: dict[str, tuple[str, str]] = {
    "min_media_per_s": ("media_per_s", "min"),
    "min_frames_per_s": ("frames_per_s", "min"),
    "min_vectors_per_s": ("vectors_per_s", "min"),
    "max_latency_p50_s": ("latency_p50_s", "max"),
    "max_latency_p95_s": ("latency_p95_s", "max"),
    "max_latency_p99_s": ("latency_p99_s", "max"),
    "min_success_rate": ("success_rate", "min"),
    "min_planned_ok_success_rate": ("planned_ok_success_rate", "min"),
    "max_unexpected": ("unexpected", "max"),
    "max_unfinished": ("unfinished", "max"),
    "max_final_lag": ("final_lag", "max"),  # per stage
    "max_peak_rss_mb": ("peak_rss_mb", "max"),  # per stage
    "max_rss_growth_mb_per_h": ("rss_growth_mb_per_h", "max"),  # per stage, soak
    "max_lag_growth_per_h": ("lag_growth_per_h", "max"),  # per stage, soak
}

Measured = dict[str, float | dict[str, float]]


MODES = ("run", "fast", "soak")


@dataclass(frozen=True)
class BudgetFile:
    environment: str
    description: str
    loads: dict[str, LoadProfile]  # mode -> the load its budgets are for
    budgets: dict[str, dict[str, Any]]  # mode -> budgets


def budget_path(name: str) -> Path:
    """``name`` as a path if it is one, else ``loadtest/budgets/<name>.json``."""
    path = Path(name)
    return path if path.suffix == ".json" else BUDGET_DIR / f"{name}.json"


def load_budget_file(name: str) -> BudgetFile:
    doc = json.loads(budget_path(name).read_text())
    unknown = set(doc) - {"environment", "description", "load", "budgets", *MODES}
    if unknown:
        raise ValueError(f"{name}: unknown keys {sorted(unknown)}")
    loads = {"run": LoadProfile.from_dict(doc["load"])}
    budgets = {"run": doc.get("budgets", {})}
    for mode in ("fast", "soak"):
        section = doc.get(mode, {})
        implied = {"rate": None} if mode == "fast" else {}
        loads[mode] = LoadProfile.from_dict({**doc["load"], **implied, **section.get("load", {})})
        budgets[mode] = section.get("budgets", {})
    for mode_budgets in budgets.values():
        validate(mode_budgets)
    return BudgetFile(doc["environment"], doc.get("description", ""), loads, budgets)


def validate(budgets: dict[str, Any]) -> None:
    unknown = set(budgets) - set(BOUNDS)
    if unknown:
        raise ValueError(f"unknown budgets {sorted(unknown)}; known: {', '.join(BOUNDS)}")
    for key, bound in budgets.items():
        ok = isinstance(bound, int | float) or (
            isinstance(bound, dict) and all(isinstance(v, int | float) for v in bound.values())
        )
        if not ok or isinstance(bound, bool):
            raise ValueError(f"budget {key} must be a number or an object of numbers, got {bound!r}")


def measured(report: LoadReport, soak: dict[str, dict[str, float]] | None = None) -> Measured:
    """The figures budgets bound, from a report (and a soak's trends)."""
    out: Measured = {
        "media_per_s": report.media_per_s,
        "frames_per_s": report.frames_per_s,
        "vectors_per_s": report.vectors_per_s,
        "success_rate": report.success_rate,
        "planned_ok_success_rate": report.planned_ok_success_rate,
        "unexpected": float(report.unexpected),
        "unfinished": float(report.unfinished),
        "final_lag": {k: float(v) for k, v in report.final_lag.items()},
        "peak_rss_mb": dict(report.peak_rss_mb),
    }
    for q in ("p50", "p95", "p99"):
        if q in report.latency_s:
            out[f"latency_{q}_s"] = report.latency_s[q]
    for key, values in (soak or {}).items():
        out[key] = dict(values)
    return out


def check(figures: Measured, budgets: dict[str, Any]) -> list[str]:
    """One line per budget violated (empty: every budget holds)."""
    validate(budgets)
    violations = []
    for key, bound in budgets.items():
        figure, direction = BOUNDS[key]
        value = figures.get(figure)
        if isinstance(bound, dict):
            per_stage = value if isinstance(value, dict) else {}
            for stage, limit in bound.items():
                violations += _compare(f"{key}[{stage}]", per_stage.get(stage), float(limit), direction)
        else:
            violations += _compare(key, value if not isinstance(value, dict) else None, float(bound), direction)
    return violations


def _compare(name: str, value: float | None, bound: float, direction: str) -> list[str]:
    if value is None:
        return [f"{name}: not measured (bound {bound:g})"]
    if direction == "min" and value < bound:
        return [f"{name}: {value:.4g} < {bound:g}"]
    if direction == "max" and value > bound:
        return [f"{name}: {value:.4g} > {bound:g}"]
    return []
