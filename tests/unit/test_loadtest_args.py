"""The benchmarks refuse a bad argument with argparse's usage line, never a traceback."""

from __future__ import annotations

import argparse

import pytest

from loadtest import gpu_check, loadgen, profile_workers
from loadtest.report import frame_size, positive_float, positive_int, positive_ints


def test_argument_types() -> None:
    assert positive_int("3") == 3 and positive_float("0.5") == 0.5 and positive_ints("1,2,4") == [1, 2, 4]
    assert frame_size("1024x576") == (1024, 576)
    for parse, bad in (
        (positive_int, "0"),
        (positive_int, "two"),
        (positive_float, "-1"),
        (positive_float, "nan"),
        (positive_ints, "1,,2"),
        (frame_size, "12"),
        (frame_size, "0x5"),
    ):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)


@pytest.mark.parametrize("argv", [["--seconds", "-1"], ["--workers", "0"], ["--frame-size", "wide"]])
def test_gpu_check_refuses_bad_values(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        gpu_check.parse(argv)
    assert done.value.code == 2 and "error: argument" in capsys.readouterr().err


def test_gpu_check_names_a_folder_without_footage(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_check.main(["--footage", str(tmp_path)]) == 2
    assert "holds no footage" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["compare", "--rounds", "0"], "argument --rounds"),
        (["compare", "--media", "-5"], "argument --media"),
        (["compare", "--fetch-workers", "0"], "argument --fetch-workers"),
        (["compare", "--concurrency", "4", "--fetch-workers", "1", "8"], "--fetch-workers: each worker needs"),
    ],
)
def test_loadgen_compare_refuses_bad_values_before_starting_anything(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        loadgen.main(argv)
    err = capsys.readouterr().err
    assert done.value.code == 2 and says in err and "Traceback" not in err


def test_profile_workers_will_not_write_one_stage_over_both(capsys: pytest.CaptureFixture[str]) -> None:
    """The section holds the fetch and the embed profile: a run of one stage may print, not write."""
    with pytest.raises(SystemExit) as done:
        profile_workers.main(["--stages", "fetch"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "profile both or add --no-write" in err and "Traceback" not in err
