"""The local stack with no Docker: a real Kafka (KRaft) from Maven Central and a real PostgreSQL.

Use :mod:`devstack.stack` (``up``, ``down``, ``status``, ``restart_kafka``); the
``kafka`` and ``postgres`` modules run one service each, ``credentials`` holds the generated
SASL and PostgreSQL passwords (and client settings that use them), ``procs`` the process plumbing.
"""
