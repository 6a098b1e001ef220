"""Write a benchmark's figures into its own section of BENCHMARKS.md, keeping the others."""

from __future__ import annotations

import platform
import re
import time
from pathlib import Path

import torch

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
