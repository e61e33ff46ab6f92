# The two commands of the README: `make demo` (the main job) and `make test` (what CI runs).
.PHONY: demo test bootstrap lint unit e2e

bootstrap:
	bash scripts/bootstrap.sh

demo: bootstrap
	.venv/bin/python -m demo

lint:
	.venv/bin/ruff check .
	.venv/bin/mypy

unit:
	.venv/bin/pytest -q tests/unit

e2e:
	.venv/bin/pytest -q tests/e2e

test: bootstrap lint
	.venv/bin/pytest -q -ra tests
