"""The deployment files (Dockerfile, docker-compose.yml, k8s/), checked offline.

No Docker engine or cluster runs here. ``scripts/validate-deploy.sh`` runs the schema validators
(hadolint, the Compose specification, Kubernetes strict schemas and the vendored KEDA CRDs) from
their own pinned venv, ``.venv-validate``, built from PyPI on first use and reused after. The
other tests read the files with PyYAML and hold them to the code: every MEDIAVEC_* name is a
setting and every value parses, KEDA's triggers name the real topics and groups and never scale
past the partitions, every workload has requests, probes and a disruption budget, and no secret
value is committed. The encrypted sink is the one stage that never scales: its store is embedded
and serves one process, so it runs as exactly one replica on a persistent volume, unscaled.
"""
