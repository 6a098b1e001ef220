"""The scaling curve's verdict: which limit the figures name (no broker, no timing)."""

from __future__ import annotations

from consumers.registry import EMBED, FETCH
from loadtest.scaling_report import Point, limit, problems, speedup


def _point(stage: str, k: int, rate: float, busy: float = 0.5, partitions: int = 8, **cores: float) -> Point:
    return Point(stage, k, partitions, 100 * k, 100 * k, 0, int(rate * 10), 10.0, busy, dict(cores, workers=k * 0.9))


def test_near_linear_names_no_limit() -> None:
    points = [_point(FETCH.name, 1, 100), _point(FETCH.name, 4, 360)]
    assert speedup(points[1], points) == 3.6
    assert "no limit reached up to k=4" in limit(FETCH.name, points, 16)


def test_a_busy_machine_names_the_cores() -> None:
    points = [_point(EMBED.name, 1, 100), _point(EMBED.name, 4, 150, busy=0.97)]
    assert "the cores (machine 97% busy of 2 cores)" in limit(EMBED.name, points, 2)


def test_more_workers_than_partitions_names_the_partitions() -> None:
    points = [_point(FETCH.name, 1, 100, partitions=2), _point(FETCH.name, 4, 190, partitions=2)]
    assert "the partitions (2): 2 workers idle" in limit(FETCH.name, points, 16)


def test_a_saturated_load_server_is_named_before_the_broker() -> None:
    points = [_point(FETCH.name, 1, 100), _point(FETCH.name, 4, 200, broker=0.5, **{"load server": 0.98})]
    assert "the load server" in limit(FETCH.name, points, 16)
    points[1].cores.pop("load server")
    assert "the broker used 0.50 cores" in limit(FETCH.name, points, 16)


def test_outputs_that_do_not_match_their_inputs_are_reported() -> None:
    good = _point(EMBED.name, 1, 100)
    short = Point(EMBED.name, 2, 16, 200, 199, 1, 150, 1.0, 0.5)
    assert problems([good, short]) == ["embed k=2: 199 outputs and 1 dead letters for 200 inputs"]


def test_cores_busy_outside_the_run_say_the_machine_was_shared() -> None:
    points = [_point(EMBED.name, 1, 100), _point(EMBED.name, 2, 120, busy=1.0)]  # workers 1.8 of 2 busy cores
    assert "not a quiet machine" not in limit(EMBED.name, points, 2)
    assert "2.2 of them by other processes: not a quiet machine" in limit(EMBED.name, points, 4)
