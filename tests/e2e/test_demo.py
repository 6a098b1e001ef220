"""The README's first command, exactly as it shows it: `make demo` in the repository root.

It runs on a data directory made for it (so the Kafka jars resolve afresh, the stack is formatted
afresh and the embedded store is empty) and on ports of its own (the test stack and a developer's
demo stack keep running), with no MEDIAVEC_* setting from the caller. It must exit 0 with no
traceback, store every sample photo, and print each search the demo runs: the text search, the
search of every space (rows of several spaces) and the image search, whose top hit is the query
image itself; and the search page's address, before ingest, and its answer after (hits with
their thumbnails). Its stdin is not a terminal, so it does not wait for Ctrl-C. The stack it
started is stopped and purged afterwards, whatever happened.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.demo import COLLECTION
from devstack.samples import find_sample_photos
from mediavec.search import random_weight_models
from mediavec.settings import Settings
from models.settings import ConceptSettings, ModelSettings

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
# Clear of the test stack (29192-29195, 29193, 25532), the default dev stack (19092-19095, 19093, 15432)
# and the test clusters and registries (20000-32700); below Linux's ephemeral range (32768 and up), where
# an outgoing connection of an earlier test could hold a listener's port (39494 once did).
PORTS = {"KAFKA_PORT": 16492, "CONTROLLER_PORT": 16493, "POSTGRES_PORT": 16632}
PAGE = re.compile(r"search page (http://127\.0\.0\.1:\d+/) \(\d+ bytes\) answered: (\d+) hits, (\d+) thumbnails")
HIT = re.compile(r"^\s*-?\d+\.\d{4}\s+(\w+)\s+(\S+)")  # a row of format_hits: score, space, media id


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAVEC_")}
    env.update({f"MEDIAVEC_DEVSTACK__{name}": str(port) for name, port in PORTS.items()})
    env["MEDIAVEC_KAFKA__BOOTSTRAP_SERVERS"] = f"127.0.0.1:{PORTS['KAFKA_PORT']}"
    env["MEDIAVEC_DATA_DIR"] = str(data_dir)
    return env


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A fresh data directory the PostgreSQL user can reach (pytest's tmp_path is private to us)."""
    path = Path(tempfile.mkdtemp(prefix="mvdemo-"))  # short: PostgreSQL's socket path lives under it
    path.chmod(0o711)
    try:
        yield path
    finally:
        down = [str(REPO / ".venv" / "bin" / "mediavec"), "dev", "down", "--purge"]
        subprocess.run(down, cwd=REPO, env=_env(path), capture_output=True, timeout=180, check=False)
        shutil.rmtree(path, ignore_errors=True)


def _sections(stdout: str) -> dict[str, list[tuple[str, str]]]:
    """Each printed search (its header line) with its rows as (space, media id)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    rows: list[tuple[str, str]] | None = None
    for line in stdout.splitlines():
        if line.startswith("search --"):
            rows = sections.setdefault(line.rstrip(":"), [])
        elif rows is not None and (m := HIT.match(line)):
            rows.append((m.group(1), m.group(2)))
        elif not line.strip():
            rows = None
    return sections


def test_make_demo_as_the_readme_shows_it(data_dir: Path) -> None:
    done = subprocess.run(
        ["make", "demo"], cwd=REPO, env=_env(data_dir), capture_output=True, text=True, timeout=840, check=False
    )
    out = done.stdout
    assert done.returncode == 0, f"make demo exited {done.returncode}:\n{out[-3000:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in out + done.stderr, done.stderr[-3000:]

    photos = sorted(find_sample_photos()[0], key=lambda p: p.name)
    n = len(photos)
    run = re.search(rf"run \S+: stored {n} of {n}, skipped 0, failed 0, .*success 100\.0%, done", out)
    assert run, out
    # The default models, looked up as the demo looks them up (the hub cache of this environment).
    allowed = {"allow_random_weights": True}
    random = random_weight_models(Settings(model=ModelSettings(**allowed), concept=ConceptSettings(**allowed)))
    assert ("RANDOM WEIGHTS" in out) == bool(random) and all(m in out for m in random), out
    assert ("`mediavec models pull`" in out) == bool(random), "the NOTE names the command that fetches weights"

    sections = _sections(out)
    during = [s for s in sections if "while ingest goes on" in s]
    assert len(during) == 1 and sections[during[0]], out  # a search answered while the sinks held the stores
    text = [s for s in sections if s.startswith("search --text") and "--space" not in s and s not in during]
    every = [s for s in sections if "--space all" in s]
    image = [s for s in sections if s.startswith("search --image")]
    assert len(text) == len(every) == len(image) == 1, list(sections)
    assert sections[text[0]] and {space for space, _ in sections[text[0]]} == {"scene"}, out
    assert {space for space, _ in sections[every[0]]} >= {"scene", "object", "grid", "text"}, out
    page = re.search(PAGE, out)
    assert page and page.group(2) == page.group(3) == "5", out  # every hit of the page's search has its thumbnail
    assert f"search page: {page.group(1)}" in out  # said before ingest, so a user can open it meanwhile
    query = image[0].removeprefix("search --image ")
    assert sections[image[0]][0] == ("scene", f"{COLLECTION}-{Path(query).stem}"), out
    assert query in {p.name for p in photos}
