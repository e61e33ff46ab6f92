#!/usr/bin/env bash
# Installs what a fresh machine lacks, then builds devcluster's binaries (cached: a second run is quick).
# Debian packages: PostgreSQL server and client tools, openssl, util-linux (unshare), runc (devcluster's OCI
# containers). Python: uv, then the locked environment in .venv. Go: the Kubernetes, etcd and helm builds into
# ~/.cache. Then the operator's image from the Dockerfile (scripts/image.sh), which the chart's e2e tests run.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'bootstrap: %s\n' "$*" >&2; }

need_packages=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_packages+=(postgresql)
command -v pg_dump >/dev/null || need_packages+=(postgresql-client)
command -v openssl >/dev/null || need_packages+=(openssl)
command -v unshare >/dev/null || need_packages+=(util-linux)
command -v runc >/dev/null || need_packages+=(runc)
if [ ${#need_packages[@]} -gt 0 ]; then
  say "installing Debian packages: ${need_packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_packages[@]}" >/dev/null
  # Debian starts a cluster of its own on 5432; devcluster runs its own PostgreSQL, so stop that one.
  command -v pg_ctlcluster >/dev/null && service postgresql stop >/dev/null 2>&1 || true
fi

if ! command -v go >/dev/null; then
  say "Go is missing: install Go >= 1.26 (the Kubernetes wrapper module needs go 1.26.0)"; exit 1
fi

if ! command -v uv >/dev/null; then
  say "installing uv (Python package manager) from PyPI"
  python3 -m pip install -q uv
fi
uv sync --frozen -q

.venv/bin/devcluster build
bash scripts/image.sh >/dev/null
