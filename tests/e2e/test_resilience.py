"""The operator killed with SIGKILL in every phase of runs, on the success and the failure path.

Every run must still end in the right state, with every Job run once, the replicas restored exactly and the app on
the right image; after a failed run the data equals the data before it. The runs take turns on one app: forward to
0005, a failing drill migration (restored), backwards to 0002, the failing drill again, and so on, so each run
starts from a known state. Each run names a release image other than the one the app runs (blog:2.0 and blog:2.1,
two builds of release 2), so a success must move the app to it and a failure must leave the app where it was.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from demo.stack import BlogStack, LocalOperator
from devcluster.cluster import Cluster
from django_migration_operator.workflow import TERMINAL
from tests.e2e.kit import (
    applied_migrations,
    checksum,
        images,
    jobs_ran_once,
    make_stack,
    reach,
    wait_for_end,
)

TRIALS = 21
SUCCESS_PHASES = ("Planning", "ScalingDown", "BackingUp", "Migrating", "Verifying", "ScalingUp")
FAILURE_PHASES = ("Planning", "ScalingDown", "BackingUp", "Migrating", "Restoring", "ScalingUp")
RECORDED = {"web": 2, "worker": 1}


@pytest.fixture(scope="module")
def stack(cluster: Cluster, operator: LocalOperator) -> Iterator[BlogStack]:
    stack = make_stack(cluster, f"kill-{uuid.uuid4().hex[:6]}", drills="fail_atomic")
    yield stack
    stack.drop()


def kill_when(stack: BlogStack, operator: LocalOperator, name: str, target: str, delay: float) -> str:
    """Kills the operator once the run reached `target` (or went past it), then starts it again.

    Returns the last phase seen before the kill.
    """
    phase = reach(stack, name, target)
    time.sleep(delay)
    operator.kill()
    operator.start()
    return phase


def test_killing_the_operator_in_every_phase_never_breaks_a_run(stack: BlogStack, operator: LocalOperator) -> None:
    chance = random.Random(20261125)
    outcomes: Counter[str] = Counter()
    killed_in: Counter[str] = Counter()
    success_turn = failure_turn = 0
    forward = True
    for trial in range(TRIALS):
        failing = trial % 2 == 1
        if failing:
            target = FAILURE_PHASES[failure_turn % len(FAILURE_PHASES)]
            failure_turn += 1
            migrate: dict[str, Any] = {"app": "drill_fail_atomic"}
        else:
            target = SUCCESS_PHASES[success_turn % len(SUCCESS_PHASES)]
            success_turn += 1
            migrate = {"app": "blog"} if forward else {"app": "blog", "target": "0002_populate_categories"}
        name = f"trial-{trial:02d}"
        before, images_before = checksum(stack), images(stack)
        release = "blog:2.1" if images_before["web"] == "blog:2.0" else "blog:2.0"
        stack.apply(stack.migration(name=name, image=release, migrate=migrate, verify={"checks": []}))
        # Short phases get a short delay, or the kill would land in the next one.
        delay = chance.uniform(0, 0.02 if target in ("Verifying", "Restoring") else 0.3)
        phase = kill_when(stack, operator, name, target, delay)
        killed_in[phase] += 1
        status = wait_for_end(stack, name, timeout=180)
        context = f"{name} (killed in {phase}, aiming at {target}): {status.get('message')}"

        replicas = {d["metadata"]["name"]: d["spec"]["replicas"] for d in json.loads(
            stack.kubectl("get", "deployments", "-n", stack.namespace, "-o", "json").stdout)["items"]}
        assert replicas == RECORDED, context
        assert status["replicas"] == RECORDED, context
        assert all(count == 1 for count in jobs_ran_once(stack, name).values()), (jobs_ran_once(stack, name), context)
        if failing:
            assert status["phase"] == "Failed" and status["failure"]["reason"] == "MigrationFailed", context
            assert any(c["type"] == "RolledBack" and c["status"] == "True" for c in status["conditions"]), context
            assert checksum(stack) == before, context
            assert images(stack) == images_before, context
        else:
            assert status["phase"] == "Succeeded", context
            expected = "0005_ensure_data_integrity" if forward else "0002_populate_categories"
            assert applied_migrations(stack)[-1] == expected, context
            assert images(stack) == {"web": release, "worker": release}, context
            forward = not forward
        outcomes[f"{'failure' if failing else 'success'} path: {status['phase']}"] += 1
        assert status["phase"] in TERMINAL
    print(f"\n{TRIALS} kill trials; killed in: {dict(killed_in)}; outcomes: {dict(outcomes)}")
    assert set(SUCCESS_PHASES) | set(FAILURE_PHASES) <= set(killed_in), f"a phase was never hit: {dict(killed_in)}"
