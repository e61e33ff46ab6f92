"""Many apps releasing at once under one operator: how many succeed, their downtime, and who spent it.

`.venv/bin/python -m bench.scale [--stacks 50] [--posts 200] [--max-stopped-apps N] [--output FILE]`

1. Deploys N+1 demo blogs (web at 1 replica, a worker), each in its namespace `scale-NN` with its own database:
   the first is set up by the demo's setup Job, the others are copies of its database (CREATE DATABASE ...
   TEMPLATE). One operator, a local process, watches every namespace.
2. Runs the demo's DjangoMigration on the extra stack alone: the downtime of one run with nothing else going on.
3. Applies the N other runs at once (one `kubectl apply`) and follows every namespace through cluster-wide watches
   (runs, Jobs, pods, Deployments), each event stamped on arrival with one monotonic clock.
4. Prints how many Succeeded, the downtime of each (min, median, max), every second of the median run's downtime
   attributed to the operator, the controllers, the kubelet or the pods' own work, the operator's reaction p95, its
   peak RSS and CPU seconds per run, and its own API requests per run from the API server's audit log (by user
   agent: kopf's and the operator's client), next to the goals.
5. Deletes the namespaces and the databases.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from kubernetes import config

from bench.observe import RUN_NAME, Observations, Observer
from bench.report import Report, progress, sec
from demo.stack import BlogStack, LocalOperator, drop_database
from devcluster.cluster import Cluster
from django_migration_operator.__main__ import DEFAULT_MAX_PLANNING_RUNS, DEFAULT_MAX_STOPPED_APPS
from django_migration_operator.kube import USER_AGENT
from django_migration_operator.workflow import TERMINAL

OPERATOR, CONTROLLERS, KUBELET, WORK = "operator", "controllers", "kubelet", "pods"
WHO = {OPERATOR: "the operator's reaction (a step done, to its next action)",
       CONTROLLERS: "the Job, Deployment and ReplicaSet controllers",
       KUBELET: "the kubelet starting or stopping pods",
       WORK: "the pods' own work (dump, migrate, the app's start)"}
OPERATOR_AGENTS = ("kopf/", USER_AGENT)

# The goals of 50 runs at once (issue 10 part 5).
GOAL_REACTION_P95 = 1.0
GOAL_OPERATOR_SHARE = 0.10
GOAL_RSS_MIB = 150
GOAL_REQUESTS_PER_RUN = 150
GOAL_DOWNTIME_VS_ALONE = 2.0


# --- who spent the downtime: pure ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    who: str
    start: float
    end: float
    then: str = ""  # what ended the span: the next move made ("the migrate Job", "the scale-up")

    @property
    def seconds(self) -> float:
        return self.end - self.start


def downtime_spans(seen: Observations) -> list[Span]:
    """The run's downtime, from the app's last serving web pod gone (`serving_ended`) to the app available again
    (`available_again`), as consecutive spans, each given to whoever had the next move. A mark missing or out of
    order gives its span to the next one: the spans always add up."""
    stopping = next(t for t, phase in seen.phases if phase == "ScalingDown")
    start = serving_ended(seen)
    end = available_again(seen)
    app_pods = [pod for pod in seen.pods.values() if not pod.job_pod]
    old = [pod for pod in app_pods if pod.added < stopping]
    new = [pod for pod in app_pods if pod.added >= stopping]
    scale_down = stop_reaction(seen)
    marks: list[tuple[float | None, str, str]] = [
        # Before `start` unless no pod was seen to stop serving: then the window starts at ScalingDown.
        (scale_down.end if scale_down else None, OPERATOR, "the scale-down"),
        (_first(pod.terminating_at for pod in old), CONTROLLERS, ""),
        (_last(pod.deleted for pod in old), KUBELET, ""),
    ]
    steps_done = start
    for job in sorted(seen.jobs.values(), key=lambda job: job.added):
        if not start <= job.added <= end:
            continue
        pod = next((p for p in seen.pods.values() if p.job_pod and p.name.startswith(f"{job.name}-")), None)
        if pod is None:
            continue
        marks += [(job.added, OPERATOR, f"the {job.step} Job"), (pod.added, CONTROLLERS, ""),
                  (pod.running, KUBELET, ""), (pod.ended, WORK, "")]
        steps_done = max(steps_done, pod.ended or job.added)
    marks += [
        (_first(e.at for e in seen.deployments if e.at >= steps_done and e.replicas > 0), OPERATOR, "the scale-up"),
        (_first(pod.added for pod in new), CONTROLLERS, ""),
        (_last(pod.running for pod in new), KUBELET, ""),
        (_last(pod.ready_at for pod in new), WORK, ""),
        # The Deployment controller counts the Ready pods as available: the end of the downtime.
        (end, CONTROLLERS, ""),
    ]
    spans: list[Span] = []
    at = start
    for moment, who, then in marks:
        if moment is None or moment < at or moment > end:
            continue
        spans.append(Span(who, at, moment, then))
        at = moment
    return spans


def serving_ended(seen: Observations) -> float:
    """When the last web pod of the app as it ran before the run stopped being Ready or went: until then a Service
    routes to it (Kubernetes 1.28+ falls back to Ready terminating pods), so its preStop is no downtime. ScalingDown
    seen when no such moment was seen."""
    stopping = next(t for t, phase in seen.phases if phase == "ScalingDown")
    ends = [_first([pod.unready_at, pod.deleted]) for pod in seen.pods.values()
            if not pod.job_pod and pod.component == "web" and pod.added < stopping]
    return max([stopping, *(end for end in ends if end is not None)])


def available_again(seen: Observations) -> float:
    """When the last of the app's Deployments was first counted available after the run's last Job pod: the app serves
    from then on, and the operator's Succeeded that follows (`end_reaction`) is no longer downtime. The run's end when
    no such event was seen."""
    end = next(t for t, phase in seen.phases if phase in TERMINAL)
    stopping = next(t for t, phase in seen.phases if phase == "ScalingDown")
    after = max([stopping, *(pod.ended for pod in seen.pods.values() if pod.job_pod and pod.ended)])
    first: dict[str, float] = {}
    for event in seen.deployments:
        if after <= event.at <= end and event.ready and event.replicas > 0:
            first.setdefault(event.name, event.at)
    return max(first.values(), default=end)


def stop_reaction(seen: Observations) -> Span | None:
    """The operator's first reaction: ScalingDown seen, to the first Deployment scaled to 0. Before the downtime
    (the app serves on through its pods' preStop), but a reaction all the same. None when not seen."""
    stopping = next(t for t, phase in seen.phases if phase == "ScalingDown")
    scaled = _first(e.at for e in seen.deployments if e.at >= stopping and e.replicas == 0)
    return Span(OPERATOR, stopping, scaled, "the scale-down") if scaled is not None else None


def end_reaction(seen: Observations) -> Span:
    """The operator's last reaction: the app available again, to the run's end seen."""
    return Span(OPERATOR, available_again(seen), next(t for t, phase in seen.phases if phase in TERMINAL), "the end")


def _first(moments: Iterable[float | None]) -> float | None:
    return min((m for m in moments if m is not None), default=None)


def _last(moments: Iterable[float | None]) -> float | None:
    return max((m for m in moments if m is not None), default=None)


def by_who(spans: Sequence[Span]) -> dict[str, float]:
    totals = dict.fromkeys(WHO, 0.0)
    for span in spans:
        totals[span.who] += span.seconds
    return totals


def time_queued(seen: Observations) -> float:
    """Seconds from Queued (for a slot, after planning) to ScalingDown; 0 for a run that never queued."""
    queued = next((t for t, phase in seen.phases if phase == "Queued"), None)
    stopping = next((t for t, phase in seen.phases if phase == "ScalingDown"), None)
    return stopping - queued if queued is not None and stopping is not None else 0.0


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass(frozen=True)
class LogPosition:
    inode: int  # the file, which keeps its inode when the API server renames it to a backup
    offset: int


def log_position(log: Path) -> LogPosition:
    status = log.stat()
    return LogPosition(status.st_ino, status.st_size)


def operator_requests(audit_log: Path, since: LogPosition) -> Counter[str]:
    """The API requests the operator made since `since` in the audit log, by verb and resource. A full log is
    renamed to <name>-<time>.log and a new one started (--audit-log-maxsize), so the lines may start in a backup."""
    if audit_log.stat().st_ino == since.inode:
        parts = [(audit_log, since.offset)]
    else:
        rotated = [path for path in audit_log.parent.glob(f"{audit_log.stem}-*{audit_log.suffix}")
                   if path.stat().st_ino == since.inode]
        if not rotated:
            raise RuntimeError(f"{audit_log} was rotated more than once during the runs (or its backup is gone): "
                               "the operator's requests cannot be counted")
        parts = [(rotated[0], since.offset), (audit_log, 0)]
    counts: Counter[str] = Counter()
    for path, offset in parts:
        with path.open("rb") as log:
            log.seek(offset)
            for line in log:
                entry = json.loads(line)
                if str(entry.get("userAgent", "")).startswith(OPERATOR_AGENTS):
                    resource = (entry.get("objectRef") or {}).get("resource", "-")
                    counts[f"{entry.get('verb')} {resource}"] += 1
    if not counts:
        raise RuntimeError(f"no request of the operator in {audit_log} since the runs began: the count is broken")
    return counts


# --- the bench ----------------------------------------------------------------------------------------------


def deploy(stacks: Sequence[BlogStack], posts: int) -> None:
    """The first stack set up by the demo's Job, the others copies of its database; then every app, ready."""
    first, *others = stacks
    first.prepare(posts=posts, say=progress)
    for stack in others:
        stack.prepare(posts=posts, say=lambda _: None, copy_of=first.database)
    progress(f"{len(stacks)} namespaces and databases ready; starting {2 * len(stacks)} app pods")
    for stack in stacks:
        stack.apply(stack.web(), stack.worker())
    for stack in stacks:
        for name in ("web", "worker"):
            stack.kubectl("rollout", "status", "-n", stack.namespace, f"deployment/{name}", "--timeout=600s")


def cleanup(cluster: Cluster, stacks: Sequence[BlogStack]) -> None:
    progress(f"cleaning up {len(stacks)} namespaces and databases")
    cluster.kubectl("delete", "namespace", *(stack.namespace for stack in stacks), "--ignore-not-found",
                    "--wait=true", "--timeout=300s", check=False)
    for stack in stacks:
        with contextlib.suppress(psycopg.Error):
            drop_database(cluster, stack.database)


def wait_ended(observer: Observer, namespaces: Sequence[str], timeout: float) -> None:
    def ended() -> bool:
        return all(observer.by_namespace[n].phases and observer.by_namespace[n].phases[-1][1] in TERMINAL
                   for n in namespaces)
    observer.wait_for(ended, f"{len(namespaces)} runs to end", timeout)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=int, default=50, help="runs applied at once (default 50)")
    parser.add_argument("--posts", type=int, default=200, help="posts in each database (default 200)")
    parser.add_argument("--max-stopped-apps", type=int, default=DEFAULT_MAX_STOPPED_APPS,
                        help="the operator's limit of apps stopped at once (default: the operator's default, "
                             "%(default)s; 0: none)")
    parser.add_argument("--max-planning-runs", type=int, default=DEFAULT_MAX_PLANNING_RUNS,
                        help="the operator's limit of runs planning at once (default: the operator's default, "
                             "%(default)s; 0: none)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds the runs may take (default 1800)")
    parser.add_argument("--output", type=Path, help="also write the tables to this file")
    args = parser.parse_args(argv)

    cluster = Cluster(log=progress)
    cluster.up()
    # The stack that runs alone first, then the N that run at once.
    stacks = [BlogStack(cluster, f"scale-{i:02d}", f"scale_{i:02d}", web_replicas=1) for i in range(args.stacks + 1)]
    solo, crowd = stacks[0], stacks[1:]
    report = Report()
    operator = LocalOperator(cluster, "operator-scale", options=("--max-stopped-apps", str(args.max_stopped_apps),
                                                                 "--max-planning-runs", str(args.max_planning_runs)))
    try:
        progress(f"deploying {len(stacks)} blogs with {args.posts} posts each")
        deploy(stacks, args.posts)
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        observer = Observer(api, None, RUN_NAME)
        observer.start()
        operator.start()
        operator.wait_ready()
        time.sleep(3)

        progress("one run alone")
        solo.apply(solo.migration(RUN_NAME))
        wait_ended(observer, [solo.namespace], args.timeout)
        alone = observer.by_namespace[solo.namespace]

        progress(f"{len(crowd)} runs at once (at most {args.max_stopped_apps or 'any number of'} apps stopped, "
                 f"{args.max_planning_runs or 'any number of'} planning)")
        cpu_before, _ = operator.usage()
        audit_start = log_position(cluster.layout.audit_log)
        applied = time.monotonic()
        cluster.kubectl("apply", "-f", "-", input=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": [stack.migration(RUN_NAME) for stack in crowd]}))
        wait_ended(observer, [stack.namespace for stack in crowd], args.timeout)
        cpu_after, peak_rss = operator.usage()
        time.sleep(2)  # the last requests of the runs' ends reach the audit log
        requests = operator_requests(cluster.layout.audit_log, audit_start)
        observer.stop()
        runs = [observer.by_namespace[stack.namespace] for stack in crowd]
        succeeded = report_scale(report, args, alone, runs, applied, cpu_after - cpu_before, peak_rss, requests)
        if observer.watch_errors:
            report.line("watch errors (resumed): " + "; ".join(observer.watch_errors))
    finally:
        operator.stop()
        cleanup(cluster, stacks)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text("\n".join(report.lines) + "\n")
        progress(f"written to {args.output}")
    return 0 if succeeded else 1



def report_scale(report: Report, args: argparse.Namespace, alone: Observations, runs: Sequence[Observations],
                 applied: float, cpu_seconds: float, peak_rss: int, requests: Counter[str]) -> bool:
    n = len(runs)
    succeeded = [run for run in runs if run.phases[-1][1] == "Succeeded"]
    ends = [run.phases[-1][0] - applied for run in runs]
    downtimes = sorted(float(run.status.get("downtimeSeconds") or 0) for run in succeeded)
    alone_downtime = float(alone.status.get("downtimeSeconds") or 0)
    median_downtime = statistics.median(downtimes) if downtimes else 0.0
    median_run = min(succeeded, key=lambda run: abs(float(run.status.get("downtimeSeconds") or 0) - median_downtime))
    spans = downtime_spans(median_run)
    parts = by_who(spans)
    window = sum(parts.values())
    reactions = [span for run in succeeded for span in [stop_reaction(run), *downtime_spans(run), end_reaction(run)]
                 if span is not None and span.who == OPERATOR]
    reaction_p95 = percentile([span.seconds for span in reactions], 0.95)
    by_step: dict[str, list[float]] = {}
    for span in reactions:
        by_step.setdefault(span.then, []).append(span.seconds)
    queued = [time_queued(run) for run in succeeded]
    requests_per_run = sum(requests.values()) / n
    mib = peak_rss / 2**20

    report.line(f"bench.scale: {n} runs at once under one operator (max-stopped-apps {args.max_stopped_apps}, "
                f"max-planning-runs {args.max_planning_runs}), "
                f"{args.posts} posts each, web at 1 replica and a worker")
    report.table("1. The runs", ["", "value"], [
        ["Succeeded", f"{len(succeeded)}/{n}"],
        ["first run ended, after apply (s)", sec(min(ends))],
        ["last run ended, after apply (s)", sec(max(ends))],
        ["time Queued for a slot, median / max (s)", f"{sec(statistics.median(queued))} / {sec(max(queued))}"],
        ["downtime min / median / max (s)", f"{sec(downtimes[0])} / {sec(median_downtime)} / {sec(downtimes[-1])}"
         if downtimes else "-"],
        ["downtime of one run alone (s)", sec(alone_downtime)],
    ])
    report.table(f"2. The median run's downtime ({sec(window)} s from its last web pod serving to the app available "
                 "again, "
                 f"status.downtimeSeconds {sec(float(median_run.status.get('downtimeSeconds') or 0))})",
                 ["who", "seconds", "share"],
                 [[WHO[who], sec(seconds), f"{seconds / window:.0%}" if window else "-"]
                  for who, seconds in parts.items()],
                 notes=["in order: " + " -> ".join(f"{span.who} {span.seconds:.2f}" for span in spans),
                        f"then, with the app serving: the operator's end {end_reaction(median_run).seconds:.2f} s "
                        "(the app available -> the run's end seen), in the reaction p95 below"])
    report.table("3. The operator", ["", "value"], [
        ["reaction p95 over every run's steps (s)", sec(reaction_p95)],
        ["peak RSS (MiB)", f"{mib:.0f}"],
        ["CPU seconds per run", sec(cpu_seconds / n)],
        ["API requests per run (audit log)", f"{requests_per_run:.0f}"],
    ], notes=["reaction p95 by the move it led to: " + ", ".join(
        f"{then} {percentile(seconds, 0.95):.2f} s" for then, seconds in by_step.items()),
        "requests, most first: " + ", ".join(f"{what} {count}" for what, count in requests.most_common(8))])
    goals = [
        ("Succeeded", f"{n}/{n}", f"{len(succeeded)}/{n}", len(succeeded) == n),
        ("operator's reaction p95", f"<= {GOAL_REACTION_P95:.0f} s", f"{reaction_p95:.2f} s",
         reaction_p95 <= GOAL_REACTION_P95),
        ("operator's share of the median downtime", f"<= {GOAL_OPERATOR_SHARE:.0%}",
         f"{parts[OPERATOR] / window:.1%}" if window else "-",
         bool(window) and parts[OPERATOR] / window <= GOAL_OPERATOR_SHARE),
        ("operator's peak RSS", f"<= {GOAL_RSS_MIB} MiB", f"{mib:.0f} MiB", mib <= GOAL_RSS_MIB),
        ("operator's API requests per run", f"<= {GOAL_REQUESTS_PER_RUN}", f"{requests_per_run:.0f}",
         requests_per_run <= GOAL_REQUESTS_PER_RUN),
        ("median downtime / one run alone", f"<= {GOAL_DOWNTIME_VS_ALONE:.0f}x",
         f"{median_downtime / alone_downtime:.2f}x" if alone_downtime else "-",
         bool(alone_downtime) and median_downtime <= GOAL_DOWNTIME_VS_ALONE * alone_downtime),
    ]
    report.table("4. Goals", ["goal", "target", "measured", "holds"],
                 [[name, target, measured, "yes" if holds else "NO"] for name, target, measured, holds in goals])
    return len(succeeded) == n


if __name__ == "__main__":
    sys.exit(main())
