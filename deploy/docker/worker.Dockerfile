# An embedline worker: the project, a CUDA build of torch, and `prefect worker start` as entry point.
# Build from the repository root:  docker build -f deploy/docker/worker.Dockerfile -t embedline-worker .
# The same image serves the cpu pool (torch falls back to the CPU when no GPU is visible).
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false EMBEDLINE_HOME=/data/embedline

RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
# CUDA torch first (its wheels carry the CUDA runtime; the host needs only the NVIDIA driver and the
# NVIDIA container toolkit), so that installing the project does not pull another torch.
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"

WORKDIR /opt/embedline
COPY pyproject.toml README.md prefect.yaml ./
COPY embedline embedline
COPY flows flows
COPY tasks tasks
COPY storage storage
COPY validation validation
COPY deploy/corpora.yaml deploy/corpora.yaml
# Never deploy/compose/secrets.env: .dockerignore keeps it (and .venv, .embedline) out of the context.
# Installs one package, `embedline` (flows, tasks, storage, validation are its subpackages); the
# deployments' entrypoints are module paths (embedline.flows.ingest:ingest_corpus), so workers need
# no source tree.
RUN pip install --no-cache-dir .

VOLUME /data
ENTRYPOINT ["prefect", "worker", "start"]
CMD ["--pool", "gpu", "--limit", "1"]
