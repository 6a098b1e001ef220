"""The long chaos run on a three-broker cluster: brokers SIGKILLed by role during ingest, again and again.

Same harness and checks as tests/e2e/test_cluster_chaos.py (:mod:`tests.e2e.cluster_chaos`), at
a size CI cannot afford: ``--rounds`` rounds of three broker kills each (the active controller,
the leader of a worker's transaction coordinator partition, then the broker killed least so far),
so every broker dies several times and in each role, with the workers SIGKILLed at random on
top. Afterwards Qdrant and PostgreSQL hold exactly the good media (ids, vectors equal to the
model's own output), the committed frames and vectors topics hold each exactly once, and the DLQ
holds exactly the planted bad inputs, once each. Counts go to BENCHMARKS.md.

It brings up its own cluster (``mediavec dev up --brokers 3`` in a temporary data directory, on
free ports) and deletes it at the end; a running dev stack is left alone:

    .venv/bin/python -m loadtest.chaos_cluster --good 1000 --rounds 3
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from loadtest.report import machine, write_section
from tests import cluster
from tests.e2e.cluster_chaos import ROLES, ChaosRun, run_pipeline

logger = logging.getLogger(__name__)


def _line(counts: Counter[str] | Counter[int], name: str = "") -> str:
    return ", ".join(f"{name}{key} {n}" for key, n in sorted(counts.items())) or "none"


def _median(values: list[float]) -> float:
    return values[len(values) // 2] if values else float("nan")


def describe(run: ChaosRun, args: argparse.Namespace) -> str:
    """The BENCHMARKS.md section: what ran, what was killed, what came out."""
    report, corpus = run.report, run.corpus
    kills = report.broker_kills
    bad = run.total - len(corpus.good)
    in_flight = sum(1 for k in kills if k.done < k.published)
    restarts = sorted(seconds for what, seconds in report.phases if what.startswith("Kafka node"))
    elections = sorted(seconds for what, seconds in report.phases if what == "a new controller")
    return (
        "## Cluster chaos run (issue 18: brokers killed by role during ingest)\n\n"
        f"`python -m loadtest.chaos_cluster --good {args.good} --rounds {args.rounds}` on {machine()}; "
        f"three KRaft nodes (heap {args.heap}), topics replicated 3 times, min ISR 2.\n\n"
        f"- media: {run.total} ({len(corpus.good)} good, {bad} planted bad, {len(corpus.flaky)} failing once "
        "with a 500)\n"
        f"- broker SIGKILLs: {len(kills)}; by role: {_line(report.kills_by_role())}; "
        f"by broker: {_line(Counter(k.broker for k in kills), 'broker ')}; "
        f"{in_flight} of them with requests in flight; each broker restarted and back in sync before the next kill "
        f"(restart to every broker answering: median {_median(restarts):.1f} s; a new active controller "
        f"{_median(elections):.1f} s after the old one's SIGKILL, median)\n"
        f"- worker SIGKILLs: {_line(report.workers.kills)}; workers that exited by themselves and were "
        f"restarted: {_line(report.workers.self_exits)}\n"
        f"- result: duplicates 0, lost 0: Qdrant and PostgreSQL each hold exactly the {len(corpus.good)} good media "
        "(ids, vectors cos >= 0.999 to the model's own output), the committed frames and vectors topics hold "
        f"each exactly once; the DLQ holds exactly the {bad} planted bad inputs, once each; the 127.0.0.2 canary "
        "was never reached\n"
        f"- duration: {report.seconds:.0f} s from the first request published until every sink had caught up\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--good", type=int, default=1000, help="good images (plus 34 planted bad inputs)")
    ap.add_argument(
        "--rounds", type=int, default=3, help="rounds of three broker kills (controller, coordinator, another)"
    )
    ap.add_argument(
        "--worker-kills",
        type=float,
        nargs=2,
        default=(15.0, 40.0),
        metavar=("MIN_S", "MAX_S"),
        help="SIGKILL a random worker every MIN_S..MAX_S seconds; 0 0: never",
    )
    ap.add_argument("--heap", default="512m", help="each broker's JVM heap")
    ap.add_argument("--no-write", action="store_true", help="print the counts, leave BENCHMARKS.md alone")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    low, high = args.worker_kills
    worker_kills = (low, high) if high > 0 else None
    tmp = Path(tempfile.mkdtemp(prefix="chaos-cluster-"))
    try:
        with cluster.running_cluster(tmp / "stack", heap=args.heap) as stack_settings:
            run = run_pipeline(
                stack_settings,
                tmp / "work",
                n_good=args.good,
                n_flaky=max(6, args.good // 20),
                roles=ROLES * args.rounds,
                worker_kill_every_s=worker_kills,
                phase_timeout_s=1800,  # the drain after the last kill is long at this size
            )
    except BaseException:
        logger.error("chaos run failed; the workers' logs are kept in %s", tmp / "work" / "logs")
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    body = describe(run, args)
    print(body)
    if not args.no_write:
        write_section("chaos_cluster", body)


if __name__ == "__main__":
    main()
