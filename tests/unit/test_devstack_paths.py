"""Where the dev stack's PostgreSQL cluster lives when the checkout sits in a private home."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from devstack.postgres import FALLBACK_ROOT, PostgresPaths, owner_can_reach
from mediavec.settings import Settings


def test_a_data_dir_the_server_user_cannot_enter_moves_the_cluster(tmp_path: Path) -> None:
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    paths = PostgresPaths.of(Settings(data_dir=private / "state"))
    if os.geteuid() == 0:  # the server runs as 'postgres', which cannot enter a 0700 root-owned dir
        assert not owner_can_reach(private / "state")
        assert paths.root.is_relative_to(FALLBACK_ROOT) and paths.root.name == "postgres"
        assert PostgresPaths.of(Settings(data_dir=private / "state")) == paths  # stable per data dir
    else:
        assert paths.root == (private / "state" / "postgres").resolve()


def test_a_reachable_data_dir_keeps_the_cluster_inside_it() -> None:
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:  # pytest's tmp_path is private (0700)
        open_dir = Path(tmp)
        open_dir.chmod(0o755)
        assert PostgresPaths.of(Settings(data_dir=open_dir)).root == (open_dir / "postgres").resolve()
