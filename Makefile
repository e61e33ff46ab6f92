# The two commands of the README: `make demo` (the main job) and `make test` (what CI runs).
.PHONY: demo test bootstrap lint unit e2e image

bootstrap:
	bash scripts/bootstrap.sh

demo: bootstrap
	.venv/bin/python -m demo

# The operator's OCI image from the Dockerfile, without Docker or a registry (buildah, a debootstrap base), unpacked
# into ~/.cache/django-migration-operator/images/ (cached).
image:
	bash scripts/image.sh

lint:
	.venv/bin/ruff check .
	.venv/bin/mypy

# Every test folder but e2e: no cluster needed.
UNIT := tests/operator tests/devcluster tests/demo tests/packaging tests/bench

unit:
	.venv/bin/pytest -q $(UNIT)

e2e:
	.venv/bin/pytest -q tests/e2e

test: bootstrap lint
	.venv/bin/pytest -q -ra tests
