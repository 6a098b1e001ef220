"""Load test: media requests at a fixed rate (or as fast as the pipeline takes them) through the
real stages, from a local media server with heavy-tailed latency, limited bandwidth and planned
failures; a report of sustained rates, publish-to-stored latency, DLQ causes, lag and memory,
checked against the environment's budgets (loadtest/budgets/<environment>.json).

    .venv/bin/mediavec dev up
    .venv/bin/python -m loadtest.loadgen run --budget cpu-2core             # ~2 minutes at the budget's rate
    .venv/bin/python -m loadtest.loadgen run --budget cpu-2core --fast      # capacity: a closed loop
    .venv/bin/python -m loadtest.loadgen soak --budget cpu-2core            # 30 minutes; memory and lag flat?
    .venv/bin/python -m loadtest.loadgen soak --from-json report.json       # render a saved soak (--json) again
    .venv/bin/python -m loadtest.loadgen compare --media 5000 --concurrency 32   # fetch stage vs img2dataset

Each command writes its section of BENCHMARKS.md (``--no-write`` to skip) and exits 1 when a
budget is violated. With ``--json``, a run also saves a partial report there every
``--checkpoint-min`` minutes (5), so a soak that is killed can still be rendered; Ctrl-C or
SIGTERM stops publishing, drains what was published and reports it, marked partial.
All traffic stays on loopback.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from devstack import stack
from devstack.settings import load_dev_settings
from loadtest.load.budgets import BudgetFile, check, load_budget_file, measured
from loadtest.load.harness import REPO, RunOptions, load_settings_for, run_load
from loadtest.load.peer import PeerResult, compare
from loadtest.load.profile import LoadProfile
from loadtest.load.render import run_markdown, soak_markdown
from loadtest.load.soak import plot, trends
from loadtest.load.summary import LoadReport
from loadtest.report import machine, positive_int, write_section

logger = logging.getLogger(__name__)
DEFAULT_PLOT = REPO / "loadtest" / "results" / "soak.png"


def _profile(args: argparse.Namespace, base: LoadProfile) -> LoadProfile:
    changes: dict[str, object] = {}
    if args.fast:
        changes["rate"] = None
    elif args.rate is not None:
        changes["rate"] = args.rate
    if getattr(args, "duration", None) is not None:
        changes["duration_s"] = args.duration
    if getattr(args, "minutes", None) is not None:
        changes["duration_s"] = args.minutes * 60
    if args.max_media is not None:
        changes["max_media"] = args.max_media
    return replace(base, **changes)  # type: ignore[arg-type]


def _run(args: argparse.Namespace, profile: LoadProfile, work: Path) -> LoadReport:
    base = load_dev_settings()
    if not args.no_stack:
        stack.up(base)
    settings = load_settings_for(base, work / "data", profile)
    checkpoint = (lambda r: _save(r, Path(args.json))) if args.json else None
    opts = RunOptions(
        work_dir=work,
        mode=args.cmd,
        monitor_s=args.monitor_s,
        poll_s=args.poll_s,
        checkpoint=checkpoint,
        checkpoint_s=args.checkpoint_min * 60,
    )
    report = run_load(settings, profile, opts)
    if args.json:
        _save(report, Path(args.json))
    return report


def _save(report: LoadReport, path: Path) -> None:
    """Write atomically: a run killed while writing a checkpoint keeps the one before."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report.to_dict(), indent=1))
    tmp.replace(path)


def cmd_run(args: argparse.Namespace, budget: BudgetFile, work: Path) -> int:
    mode = "fast" if args.fast else "run"
    profile = _profile(args, budget.loads[mode])
    report = _run(args, profile, work)
    violations = check(measured(report), budget.budgets[mode])
    fast = profile.rate is None
    title = "Load test, as fast as possible (issue 5)" if fast else "Load test at a fixed rate (issue 5)"
    body = run_markdown(report, title, _command(), machine(), budget.environment, violations)
    return _finish(args, "loadgen_run_fast" if fast else "loadgen_run", body, violations)


def cmd_soak(args: argparse.Namespace, budget: BudgetFile, work: Path) -> int:
    if args.from_json:  # the report a soak saved with --json: render it again, nothing runs
        report = LoadReport.from_dict(json.loads(Path(args.from_json).read_text()))
    else:
        report = _run(args, _profile(args, budget.loads["soak"]), work)
    flat = trends(report)
    figures = measured(report, {k: v for k, v in flat.items() if k in ("rss_growth_mb_per_h", "lag_growth_per_h")})
    violations = check(figures, budget.budgets["soak"])
    png = plot(report, Path(args.plot))
    shown = png.relative_to(REPO) if png.is_relative_to(REPO) else png
    body = run_markdown(report, "Soak (issue 5)", _command(), machine(), budget.environment, violations)
    body += soak_markdown(report, flat, str(shown))
    return _finish(args, "loadgen_soak", body, violations)


def cmd_compare(args: argparse.Namespace, budget: BudgetFile, work: Path) -> int:
    base = load_dev_settings()
    if not args.no_stack:
        stack.up(base)
    settings = load_settings_for(base, work / "data", budget.loads["run"])
    result = compare(
        settings,
        budget.loads["run"],
        args.media,
        args.concurrency,
        args.processes,
        work,
        tuple(dict.fromkeys(args.fetch_workers)),
        args.rounds,
    )
    return _finish(args, "loadgen_compare", compare_markdown(result), [])


def compare_markdown(r: PeerResult) -> str:
    head = "| round | " + " | ".join(f"fetch stage, {_workers(r, w)}: media/s" for w in r.fetch_workers)
    head += " | img2dataset: media/s | img2dataset by wall clock | " + " | ".join(
        f"ratio, {_workers(r, w)}" for w in r.fetch_workers
    )
    rows = "".join(
        f"| {i} | "
        + " | ".join(f"{f.per_s:.1f} ({f.ok:,} in {f.seconds:.1f} s, {f.max_concurrent} at once)" for f in x.fetch)
        + f" | {x.i2d_per_s:.1f} ({x.i2d_ok:,} in {x.i2d_window_s:.1f} s, {x.i2d_max_concurrent} at once) | "
        + f"{x.i2d_ok / x.i2d_wall_s:.1f} | "
        + " | ".join(f"{x.ratio(w):.2f}x" for w in r.fetch_workers)
        + " |\n"
        for i, x in enumerate(r.rounds, 1)
    )
    ratios = "; ".join(
        f"{_workers(r, w)}: **{r.ratio(w):.2f}x** ({r.fetch_per_s(w):.1f} media/s)" for w in r.fetch_workers
    )
    shares = ", ".join(
        [f"fetch stage, {_workers(r, w)} {r.fetch_per_s(w) / r.bound_per_s:.0%}" for w in r.fetch_workers]
        + [f"img2dataset {r.i2d_per_s / r.bound_per_s:.0%}"]
    )
    return (
        "## Fetch stage vs img2dataset (issue 5)\n\n"
        f"`{_command()}` on {machine()}: the same {r.media:,} planned media (file, server delay, bandwidth; no "
        "planned failures) from the same loopback load server, downloaded and resized to 1024 px (long side), "
        f"JPEG q90, at concurrency {r.concurrency} in all, in {len(r.rounds)} round{'s' if len(r.rounds) > 1 else ''}. "
        "In each round the fetch stage "
        "runs first, then img2dataset, each on URLs of its own (the fetch stage skips a URL it has seen).\n\n"
        "- mediavec: the fetch stage through Kafka, its workers warm, timed from the first publish to the first "
        "look (every 50 ms) at which the fetch group has committed every request (a request commits with its "
        "frame).\n"
        f"- img2dataset {r.i2d_version} ({r.i2d_processes} processes x {r.i2d_threads} threads), timed by its "
        "shard stats (first start to last end); by wall clock, its start-up included, in its own column.\n"
        "- In brackets: media done, seconds, and the most requests the server saw at once.\n"
        "- The load server sends a body's bytes when its bandwidth would have carried them and ends the response "
        "with the last one. Before 2026-12-07 it held every response 50 ms after its last byte, which delayed "
        "the next request on a kept-alive connection: it slowed the fetch stage, which reuses connections, "
        "and not img2dataset, which does not (the 0.55x and 0.83x measured before were under it).\n"
        f"- The plan itself bounds either tool to **{r.bound_per_s:.1f} media/s** at concurrency {r.concurrency}: "
        "the concurrency over the mean time the server takes per media (its planned delay, then its body at the "
        "bandwidth). Only a client that cost nothing, on a machine of its own, would reach it; here both tools, "
        "the load server and (for the fetch stage) the broker share two cores.\n\n"
        f"{head} |\n| ---: |" + " ---: |" * (2 * len(r.fetch_workers) + 2) + "\n"
        f"{rows}\n"
        f"Ratio fetch / img2dataset, median of the rounds: {ratios}; img2dataset {r.i2d_per_s:.1f} media/s.\n"
        f"Share of the plan's bound, medians: {shares}.\n"
    )


def _workers(r: PeerResult, workers: int) -> str:
    if workers == 1:
        return f"1 worker x concurrency {r.concurrency}"
    return f"{workers} workers x concurrency {r.concurrency // workers}"


def _command() -> str:
    return "python -m loadtest.loadgen " + " ".join(sys.argv[1:])


def _finish(args: argparse.Namespace, key: str, body: str, violations: list[str]) -> int:
    print(body)
    if not args.no_write:
        write_section(key, body)
    for line in violations:
        print(f"budget violated: {line}", file=sys.stderr)
    return 1 if violations else 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run", "soak", "compare"):
        p = sub.add_parser(name)
        p.add_argument("--budget", default="cpu-2core", help="environment name or budget file")
        p.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md")
        p.add_argument("--no-stack", action="store_true", help="use the broker the settings name as it is")
        p.add_argument("--work", type=Path, help="keep media, stores and worker logs here")
        if name == "compare":
            p.add_argument("--media", type=positive_int, default=1000)
            p.add_argument("--concurrency", type=positive_int, default=32)
            p.add_argument(
                "--processes", type=positive_int, default=2, help="img2dataset processes (threads = C / this)"
            )
            p.add_argument(
                "--fetch-workers",
                type=positive_int,
                nargs="+",
                default=[1, 2],
                help="fetch processes (each with concurrency C / this); each number is run every round",
            )
            p.add_argument("--rounds", type=positive_int, default=3, help="each tool this many times, in turn")
            continue
        p.add_argument("--rate", type=float, help="media/s (default: the budget's)")
        p.add_argument("--fast", action="store_true", help="as fast as the pipeline takes them (closed loop)")
        p.add_argument("--max-media", type=int)
        p.add_argument("--poll-s", type=float, default=0.25, help="tracker poll interval (latency resolution)")
        p.add_argument("--monitor-s", type=float, default=5.0, help="lag and memory sampling interval")
        p.add_argument("--json", help="write the full report (series included) as JSON here")
        p.add_argument(
            "--checkpoint-min",
            type=float,
            default=5.0,
            help="with --json, write a partial report there this often (a killed soak keeps its series)",
        )
        if name == "run":
            p.add_argument("--duration", type=float, help="seconds of publishing (default: the budget's)")
        else:
            p.add_argument("--minutes", type=float, help="soak length (default: the budget's, 30)")
            p.add_argument("--plot", default=str(DEFAULT_PLOT), help="PNG of throughput, lag and memory")
            p.add_argument("--from-json", help="render the report a soak saved with --json (runs nothing)")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if args.cmd == "compare" and max(args.fetch_workers) > args.concurrency:
        ap.error(f"--fetch-workers: each worker needs at least one of the {args.concurrency} concurrent downloads")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a stopped run drains and reports, like Ctrl-C
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    budget = load_budget_file(args.budget)
    if getattr(args, "json", None):  # made now: a half-hour soak must not fail at its last line
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    commands = {"run": cmd_run, "soak": cmd_soak, "compare": cmd_compare}
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        return commands[args.cmd](args, budget, args.work)
    with tempfile.TemporaryDirectory(prefix="mediavec-load-") as tmp:
        return commands[args.cmd](args, budget, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
