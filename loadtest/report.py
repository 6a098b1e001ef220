"""Write a benchmark's figures into its own section of BENCHMARKS.md, keeping the others; the
argument types the benchmarks share (a bad value is argparse's one usage line, not a traceback)."""

from __future__ import annotations

import argparse
import platform
import re
import time
from pathlib import Path

import torch

from mediavec.argtypes import positive_float, positive_int

__all__ = ["frame_size", "machine", "positive_float", "positive_int", "positive_ints", "write_section"]

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = "# mediavec benchmarks\n\nEach section is rewritten by the command it names; the others are kept.\n"


def machine() -> str:
    import os

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {gpu}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}"


def write_section(key: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace (or append) the section delimited by ``<!-- key -->`` markers."""
    text = path.read_text() if path.exists() else HEADER
    block = f"<!-- {key} -->\n{body.rstrip()}\n<!-- /{key} -->"
    pattern = re.compile(rf"<!-- {re.escape(key)} -->.*?<!-- /{re.escape(key)} -->", re.S)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def positive_ints(text: str) -> list[int]:
    """An argparse type: comma-separated whole numbers, each at least 1 (``1,2,4``)."""
    return [positive_int(part) for part in text.split(",")]


def frame_size(text: str) -> tuple[int, int]:
    """An argparse type: ``WIDTHxHEIGHT`` in pixels, each at least 1 (``1024x576``)."""
    width, sep, height = text.lower().partition("x")
    if not sep:
        raise argparse.ArgumentTypeError(f"not WIDTHxHEIGHT: {text!r}")
    return positive_int(width), positive_int(height)
