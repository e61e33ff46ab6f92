"""CrashLoopBackOff timing."""

from __future__ import annotations

from devcluster.kubelet.backoff import CrashBackoff, go_duration


def test_first_restart_is_immediate_then_doubling_up_to_five_minutes() -> None:
    backoff = CrashBackoff()
    delays = [backoff.next_delay(ran_seconds=1) for _ in range(8)]
    assert delays == [0, 10, 20, 40, 80, 160, 300, 300]


def test_a_container_that_ran_more_than_ten_seconds_starts_afresh() -> None:
    backoff = CrashBackoff()
    for _ in range(4):
        backoff.next_delay(ran_seconds=1)
    assert backoff.next_delay(ran_seconds=11) == 0
    assert backoff.next_delay(ran_seconds=1) == 10


def test_go_duration() -> None:
    assert [go_duration(s) for s in (0, 10, 80, 300, 3725)] == ["0s", "10s", "1m20s", "5m0s", "1h2m5s"]
