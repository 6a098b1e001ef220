# syntax=docker/dockerfile:1
# mediavec: one image for every stage (`mediavec run fetch|embed|sink-qdrant|sink-postgres|
# sink-encrypted`), the topic job (`mediavec topics`) and the CLI. torch from PyPI is the CUDA
# build and runs on CPU as well, so the same image serves GPU and CPU nodes. No model weights
# inside: mount them and set MEDIAVEC_MODEL__MODEL_DIR (README: model weights).
#
# The project is installed with its `encrypted` extra: cyborgdb-core, the engine of the
# sink-encrypted stage, a PROPRIETARY package (README: Licences; wheels for x86_64 and aarch64).
# Without it every other stage runs and sink-encrypted fails at start: to build an image free of
# it, install "." instead of ".[encrypted]" below and deploy no sink-encrypted.
#
#   docker build -t mediavec:0.1.0 .
#   docker run --rm mediavec:0.1.0 --help

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/mediavec
WORKDIR /src
COPY pyproject.toml README.md ./
# The runtime layers only (ARCHITECTURE.md): devstack/ and loadtest/ stay out of the image.
COPY schemas/ schemas/
COPY streams/ streams/
COPY media/ media/
COPY models/ models/
COPY stores/ stores/
COPY consumers/ consumers/
COPY mediavec/ mediavec/
# The import check loads the engine's extension, so a system library the slim base lacks fails
# the build rather than the first sink-encrypted pod.
RUN /opt/mediavec/bin/pip install ".[encrypted]" \
    && /opt/mediavec/bin/python -c "import mediavec.settings, mediavec.cli, consumers.sink_encrypted.sink, cyborgdb_core"

FROM python:3.11-slim
LABEL org.opencontainers.image.title="mediavec" \
      org.opencontainers.image.description="Images and video to searchable vectors over Apache Kafka" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed non-root uid/gid (k8s/ runs as 10001); the data directory holds worker locks, the
# demo's sample copies and sink-encrypted's store (a volume there: Compose copies this
# directory's owner onto a new named volume), so it is the only place the workers write besides
# /tmp and $HOME.
RUN groupadd --system --gid 10001 mediavec \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/mediavec mediavec \
    && install -d -o mediavec -g mediavec /var/lib/mediavec
COPY --from=build /opt/mediavec /opt/mediavec
ENV PATH=/opt/mediavec/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MEDIAVEC_DATA_DIR=/var/lib/mediavec \
    HF_HUB_OFFLINE=1
USER 10001:10001
WORKDIR /var/lib/mediavec
EXPOSE 9100
ENTRYPOINT ["mediavec"]
CMD ["--help"]
