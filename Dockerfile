# The operator image: `python -m django_migration_operator` with only the locked runtime dependencies.
#
#   docker build -t django-migration-operator:0.1.0 .
#   docker run --read-only --tmpfs /tmp django-migration-operator:0.1.0 --namespace shop
#
# The base is pinned by tag. Pin it by digest too (python:3.11.14-slim-bookworm@sha256:...) where the build can
# reach the registry: the digest could not be looked up on the machine this file was written on (no registry
# reachable). The same tag in both stages matters: the virtual environment built in the first stage points at
# /usr/local/bin/python of that exact image.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# uv from PyPI, the version the lock file was written with.
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
# Compiled bytecode: the runtime root filesystem is read-only, so Python could not cache it there later.
# Copy mode: the cache mount and the venv are on different filesystems. The base image's Python, never a
# downloaded one.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
# Dependencies first, in their own layer: they change far less often than the operator's code.
# --no-default-groups leaves out the dev and demo groups that pyproject.toml installs by default. The workspace's
# other member, devcluster (the project's test cluster), is installed by the dev group only: it is not in the
# build context, and uv needs it for nothing here.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-default-groups --no-install-project
COPY operator/ operator/
# --no-editable: the package is copied into the venv, so the runtime stage needs the venv alone.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-default-groups --no-editable

FROM ${PYTHON_IMAGE}
# A named user with a fixed numeric id: Kubernetes' runAsNonRoot can only verify a numeric USER, and kopf
# names its peering identity after the user (getpass.getuser() fails for a uid without a passwd entry).
# (Debian already has a group named operator, hence the project's own name.)
RUN groupadd --system --gid 10001 djangoops \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin djangoops
COPY --from=build --chown=root:root /app/.venv /app/.venv
# Nothing is written outside /tmp (an emptyDir in the chart): no bytecode, temporary files in /tmp.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp
WORKDIR /app
USER 10001:10001
# kopf's liveness endpoint (--liveness, default http://0.0.0.0:8080/healthz) and the Prometheus metrics
# (--metrics, default 0.0.0.0:9090).
EXPOSE 8080 9090
ENTRYPOINT ["python", "-m", "django_migration_operator"]
