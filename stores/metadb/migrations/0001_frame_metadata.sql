-- Frame and object metadata, one row per vector the embed stage produced, and the offsets of the
-- consumers that write it (stored in the same transaction as the rows: exactly-once).
--
-- frame_metadata is partitioned by day on ingested_at, the Kafka timestamp of the vector batch
-- record (deterministic across redeliveries). Partitions are created on demand by the writer
-- (stores.metadb.partitions) and dropped by retention; there is no default partition, so a row
-- whose day has no partition is refused rather than parked somewhere retention never reaches.
-- The primary key must contain the partition key: (point_id, ingested_at).

CREATE TABLE frame_metadata (
    point_id         uuid             NOT NULL,
    ingested_at      timestamptz      NOT NULL,
    media_id         text             NOT NULL,
    frame_index      integer          NOT NULL,
    timestamp_s      double precision NOT NULL,
    space            text             NOT NULL,
    object_index     integer          NOT NULL,
    box_x1           real,
    box_y1           real,
    box_x2           real,
    box_y2           real,
    label            text,
    score            real,
    model            text             NOT NULL,
    collection       text             NOT NULL,
    source_url       text             NOT NULL,
    content_sha256   text             NOT NULL,
    run_id           text             NOT NULL,
    metadata         jsonb            NOT NULL DEFAULT '{}'::jsonb,
    published_at     timestamptz,
    source_topic     text             NOT NULL,
    source_partition integer          NOT NULL,
    source_offset    bigint           NOT NULL,
    PRIMARY KEY (point_id, ingested_at)
) PARTITION BY RANGE (ingested_at);

CREATE INDEX frame_metadata_media_idx ON frame_metadata (media_id, frame_index);

COMMENT ON TABLE frame_metadata IS
    'One row per stored vector; daily partitions frame_metadata_pYYYYMMDD on ingested_at (UTC).';
COMMENT ON COLUMN frame_metadata.ingested_at IS
    'Kafka timestamp of the vector batch record: fixed per record, so a redelivery hits the same row.';

CREATE TABLE sink_offsets (
    consumer    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, partition)
);

COMMENT ON TABLE sink_offsets IS
    'Next Kafka offset to read per consumer and partition, written in the same transaction as the rows.';
