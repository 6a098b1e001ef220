-- A small JPEG of each frame (the embed stage's thumbnail, 128 px at quality 70 by default), for
-- the search service to show beside a hit. One row per frame and vector batch record that carried
-- one: a frame's thumbnail rides on one of its batches only (schemas/README.md, vector_batch v2).
--
-- Partitioned by day on ingested_at exactly like frame_metadata (the Kafka timestamp of the
-- record, fixed across redeliveries), with partitions frame_thumbnails_pYYYYMMDD created and
-- dropped together with frame_metadata's (stores.metadb.partitions): a day's rows and its
-- thumbnails share one lifetime. Days that frame_metadata already had before this migration get
-- their thumbnail partitions on the next write of that day. The row of a frame to show is the one with the latest ingested_at.

CREATE TABLE frame_thumbnails (
    media_id         text        NOT NULL,
    frame_index      integer     NOT NULL,
    ingested_at      timestamptz NOT NULL,
    width            integer     NOT NULL,
    height           integer     NOT NULL,
    jpeg             bytea       NOT NULL,
    collection       text        NOT NULL,
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    PRIMARY KEY (media_id, frame_index, ingested_at)
) PARTITION BY RANGE (ingested_at);

COMMENT ON TABLE frame_thumbnails IS
    'One JPEG thumbnail per frame and ingest; daily partitions frame_thumbnails_pYYYYMMDD on ingested_at (UTC).';
COMMENT ON COLUMN frame_thumbnails.width IS
    'Width in pixels of the frame (the space of its boxes), not of the JPEG; 0 when unknown.';
COMMENT ON COLUMN frame_thumbnails.height IS
    'Height in pixels of the frame (the space of its boxes), not of the JPEG; 0 when unknown.';

