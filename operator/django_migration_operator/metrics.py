"""Prometheus metrics of the operator, served on their own port (`--metrics`, default :9090/metrics).

Counted per operator process: a restart starts the counters again, as Prometheus expects of a counter. A phase
entered before a restart has no duration here (its start was not seen by this process).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Seconds, from a quick plan to a migration that takes an hour.
_STEP_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

RUNS_FINISHED = Counter("djangoops_runs_finished", "Runs that ended, by phase (Succeeded, Failed) and reason.",
                        ["phase", "reason"])
RUNS_IN_PROGRESS = Gauge("djangoops_runs_in_progress", "Runs this operator is driving now.")
STEP_SECONDS = Histogram("djangoops_step_duration_seconds", "Time spent in each phase of a run.", ["phase"],
                         buckets=_STEP_BUCKETS)
DOWNTIME_SECONDS = Histogram("djangoops_downtime_seconds",
                             "Seconds no pod of the app served, per run that stopped it (status.downtimeSeconds).",
                             buckets=_STEP_BUCKETS)

NOTIFICATIONS_FAILED = Counter("djangoops_notifications_failed",
                               "Webhook notifications (spec.notify) that failed or timed out, by webhook name.",
                               ["webhook"])
# Set by the driver from the run's deadline; an alert (the chart's PrometheusRule) fires on 1.
RUN_OVERDUE = Gauge("djangoops_run_overdue", "1 while a run has gone on for longer than its deadline, 0 otherwise.",
                    ["namespace", "name"])
