"""The benchmarks refuse a bad argument with argparse's usage line, never a traceback."""

from __future__ import annotations

import argparse

import pytest

from loadtest import gpu_check
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
