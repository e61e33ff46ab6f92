"""bench.scale's attribution of a run's downtime, from stamped watch events: every second goes to someone."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from bench.observe import DeploymentEvent, JobRecord, Observations, PodRecord
from bench.scale import (
    CONTROLLERS,
    KUBELET,
    OPERATOR,
    WORK,
    Span,
    available_again,
    by_who,
    downtime_spans,
    end_reaction,
    log_position,
    operator_requests,
    percentile,
    serving_ended,
    stop_reaction,
    time_queued,
)


def offline_run() -> Observations:
    """An Offline run as the watches stamp it: ScalingDown at 10, the app's one pod serving through its preStop until
    it exits at 12.8 and gone at 13, backup and migrate Jobs, the app back and Ready at 24, Succeeded at 24.5."""
    seen = Observations(phases=[(1.0, "Planning"), (5.0, "Queued"), (10.0, "ScalingDown"), (13.2, "BackingUp"),
                                (16.0, "Migrating"), (20.0, "Verifying"), (20.1, "ScalingUp"), (24.5, "Succeeded")])
    seen.deployments = [DeploymentEvent(0.5, "web", 1, True), DeploymentEvent(10.2, "web", 0, False),
                        DeploymentEvent(20.3, "web", 1, False), DeploymentEvent(24.2, "web", 1, True)]
    seen.pods = {
        "web-old": PodRecord("web-old", "web", False, 0.5, ready_at=0.7, terminating_at=10.3, unready_at=12.8,
                             deleted=13.0),
        "run-backup-x": PodRecord("run-backup-x", "backup", True, 13.5, running=14.0, ended=15.0),
        "run-migrate-x": PodRecord("run-migrate-x", "migrate", True, 16.3, running=16.8, ended=19.8),
        "web-new": PodRecord("web-new", "web", False, 20.4, running=21.0, ready_at=24.0),
    }
    seen.jobs = {"run-backup": JobRecord("run-backup", "backup", 13.3), "run-migrate": JobRecord("run-migrate",
                                                                                                 "migrate", 16.1)}
    return seen


def test_the_spans_follow_the_run_and_add_up_to_its_downtime() -> None:
    spans = downtime_spans(offline_run())
    assert [span.who for span in spans] == [
        KUBELET,  # the pod's container ended (it served until then), to the pod gone
        OPERATOR, CONTROLLERS, KUBELET, WORK,  # the backup Job
        OPERATOR, CONTROLLERS, KUBELET, WORK,  # the migrate Job
        OPERATOR, CONTROLLERS, KUBELET, WORK,  # verified, scaled up, the app's start
        CONTROLLERS]  # the Deployment available: the app serves again
    assert spans[0].start == 12.8 and spans[-1].end == 24.2
    assert all(a.end == b.start for a, b in itertools.pairwise(spans))
    totals = by_who(spans)
    assert sum(totals.values()) == pytest.approx(11.4)
    assert totals[OPERATOR] == pytest.approx(0.3 + 1.1 + 0.5)
    assert totals[WORK] == pytest.approx(1.0 + 3.0 + 3.0)
    assert [span.then for span in spans if span.who == OPERATOR] == ["the backup Job", "the migrate Job",
                                                                    "the scale-up"]
    assert end_reaction(offline_run()) == Span(OPERATOR, 24.2, 24.5, "the end"), "the end seen, the app serving"
    assert stop_reaction(offline_run()) == Span(OPERATOR, 10.0, 10.2, "the scale-down"), "before the downtime"


def test_a_deployment_event_after_the_end_of_serving_is_no_scale_down_of_the_operators() -> None:
    seen = offline_run()
    seen.deployments.append(DeploymentEvent(12.9, "worker", 0, False))  # the worker's status as its pod goes
    spans = downtime_spans(seen)
    assert [span.then for span in spans if span.who == OPERATOR] == ["the backup Job", "the migrate Job",
                                                                    "the scale-up"]


def test_the_downtime_starts_when_the_last_web_pod_stopped_serving() -> None:
    seen = offline_run()
    assert serving_ended(seen) == 12.8, "Ready until its container ended: a Service routed to it"
    seen.pods["web-old"].unready_at = None  # never seen not Ready: until it was gone
    assert serving_ended(seen) == 13.0
    seen.pods["web-old"].deleted = None  # nothing seen: from ScalingDown
    assert serving_ended(seen) == 10.0


def test_the_app_is_available_again_when_its_last_deployment_first_is_after_the_jobs() -> None:
    seen = offline_run()
    seen.deployments += [DeploymentEvent(23.0, "worker", 1, True), DeploymentEvent(24.4, "web", 1, True)]
    assert available_again(seen) == 24.2, "the web's first available event, the worker's came earlier"
    seen.deployments = seen.deployments[:3]  # never seen available: the run's end
    assert available_again(seen) == 24.5


def test_a_mark_not_seen_gives_its_span_to_the_next() -> None:
    seen = offline_run()
    seen.pods["run-backup-x"].running = None  # the watch missed Running: starting and work are one span
    spans = downtime_spans(seen)
    assert Span(WORK, 13.5, 15.0) in spans and sum(by_who(spans).values()) == pytest.approx(11.4)


def test_time_queued_counts_only_a_run_that_queued() -> None:
    assert time_queued(offline_run()) == 5.0
    never = Observations(phases=[(1.0, "Planning"), (3.0, "ScalingDown"), (9.0, "Succeeded")])
    assert time_queued(never) == 0.0


def test_percentile() -> None:
    assert percentile([float(v) for v in range(1, 101)], 0.95) == 96.0


def audit(path: Path, *agents: str) -> None:
    with path.open("a") as log:
        for agent in agents:
            log.write(json.dumps({"userAgent": agent, "verb": "get", "objectRef": {"resource": "pods"}}) + "\n")


def test_the_operators_requests_are_counted_across_a_rotation_of_the_audit_log(tmp_path: Path) -> None:
    log = tmp_path / "kube-apiserver-audit.log"
    audit(log, "kopf/1.37", "kubectl/v1.36")  # before the runs
    since = log_position(log)
    audit(log, "kopf/1.37", "kube-controller-manager/v1.36")
    log.rename(tmp_path / "kube-apiserver-audit-2026-12-07T13-24-59.776.log")  # the API server's rotation
    audit(log, "kopf/1.37", "kopf/1.37")
    assert operator_requests(log, since) == {"get pods": 3}
    with pytest.raises(RuntimeError, match="no request of the operator"):
        operator_requests(log, log_position(log))
