"""The frame metadata database (PostgreSQL): connections, migrations, partitions, writes.

- :mod:`stores.metadb.db`: connections; the DSN is ``settings.postgres.dsn`` or the dev stack's.
- :mod:`stores.metadb.migrate`: numbered SQL files in ``migrations/``, applied once each.
- :mod:`stores.metadb.partitions`: daily partitions of ``frame_metadata`` and ``frame_thumbnails``.
- :mod:`stores.metadb.writer`: offset rows and the COPY-based bulk insert of one transaction.
- :mod:`stores.metadb.thumbnails`: a frame's latest thumbnail, for the search service.
- :mod:`stores.metadb.commands`: ``migrate_database`` and ``drop_old_partitions`` for the CLI.
"""

from stores.metadb.commands import drop_old_partitions, migrate_database
from stores.metadb.db import connect, dsn
from stores.metadb.migrate import MigrationError, applied_versions, migrate
from stores.metadb.partitions import drop_partitions_older_than, ensure_partitions, existing_partitions
from stores.metadb.thumbnails import Thumbnail, read_thumbnail
from stores.metadb.writer import StagedInsert, load_offsets

__all__ = [
    "MigrationError",
    "StagedInsert",
    "Thumbnail",
    "applied_versions",
    "connect",
    "drop_old_partitions",
    "drop_partitions_older_than",
    "dsn",
    "ensure_partitions",
    "existing_partitions",
    "load_offsets",
    "migrate",
    "migrate_database",
    "read_thumbnail",
]
