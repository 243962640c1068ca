#!/usr/bin/env bash
# Writes deploy/compose/secrets.env (0600, git-ignored) with fresh random credentials for the Prefect
# API, Postgres and MinIO. Run once before `docker compose up`; it refuses to overwrite a file in use.
set -euo pipefail
cd "$(dirname "$0")"
[ -e secrets.env ] && { echo "secrets.env exists: delete it first (and the postgres/minio volumes)"; exit 1; }
rand() { openssl rand -hex 24; }
API=$(rand) PG=$(rand) S3=$(rand)
umask 077
cat > secrets.env <<ENV
PREFECT_SERVER_API_AUTH_STRING=admin:$API
PREFECT_API_AUTH_STRING=admin:$API
POSTGRES_PASSWORD=$PG
EMBEDLINE_CATALOG_PASSWORD=$PG
PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://embedline:$PG@postgres:5432/prefect
MINIO_ROOT_USER=embedline
MINIO_ROOT_PASSWORD=$S3
AWS_ACCESS_KEY_ID=embedline
AWS_SECRET_ACCESS_KEY=$S3
ENV
echo "wrote $(pwd)/secrets.env: in the UI, enter the whole string admin:$API"
