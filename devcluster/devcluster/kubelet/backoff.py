"""CrashLoopBackOff timing, as the kubelet's per-container flowcontrol.Backoff does it.

The first restart after a crash is immediate; each further quick crash doubles the wait (10 s, 20 s, 40 s,
... 5 min). A container that ran for more than RESET_AFTER_SECONDS starts afresh.
"""

from __future__ import annotations

from dataclasses import dataclass

INITIAL_SECONDS = 10.0
MAX_SECONDS = 300.0
RESET_AFTER_SECONDS = 10.0


@dataclass
class CrashBackoff:
    current: float = 0.0  # the wait before the next restart; 0 until the first crash

    def next_delay(self, ran_seconds: float) -> float:
        """The wait before restarting a container that just ended after running `ran_seconds`."""
        if ran_seconds > RESET_AFTER_SECONDS:
            self.current = 0.0
        delay = self.current
        self.current = INITIAL_SECONDS if self.current == 0 else min(self.current * 2, MAX_SECONDS)
        return delay


def go_duration(seconds: float) -> str:
    """A whole number of seconds as Go's time.Duration prints it: 10s, 1m20s, 5m0s."""
    total = round(seconds)
    minutes, rest = divmod(total, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes}m{rest}s"
    if minutes:
        return f"{minutes}m{rest}s"
    return f"{rest}s"
