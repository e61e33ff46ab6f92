"""bench.online: the same release run Online and Offline under HTTP load: downtime, failed and slowest requests.

Two demo stacks, each at release 2.0 on its full schema (0005) with N posts, 2 web replicas and a worker, each under
the load generator of the e2e tests (posts created through the web pods, as fast as they answer). Each gets release
3.0 (0006 expand, 0007 expand, 0008 contract): one with strategy Online, one with strategy Offline. Both in one
invocation, on the same machine at the same time of day, so the two rows compare.

    .venv/bin/python -m bench.online [--posts 2000] [--output bench/results/online.txt]
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.report import progress
from bench.timings import cleanup
from demo.load import LoadGenerator
from demo.stack import BlogStack, LocalOperator, wait_for_end
from devcluster.cluster import Cluster

STRATEGIES = ("Online", "Offline")
CHECK = {"checks": [{"name": "no subtitles yet", "sql": "SELECT count(*) FROM blog_post WHERE subtitle IS NOT NULL",
                     "expect": "0"}]}


@dataclass(frozen=True)
class Row:
    strategy: str
    phase: str
    downtime: float
    run_seconds: float
    acknowledged: int
    failed: int
    slowest: float
    lost: int


def run_release(stack: BlogStack, strategy: str, timeout: float) -> Row:
    with LoadGenerator(stack) as load:
        deadline = time.monotonic() + 60
        while len(load.acknowledged) < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        progress(f"{strategy}: applying release 3.0 under load ({len(load.acknowledged)} writes so far)")
        started = time.monotonic()
        stack.apply(stack.migration(name="release-3", image="blog:3.0", strategy=strategy, verify=CHECK))
        status = wait_for_end(stack, "release-3", timeout)
        run_seconds = time.monotonic() - started
        time.sleep(3)  # writes on the new release, so the last failures (if any) are counted too
    return Row(strategy=strategy, phase=str(status.get("phase")), downtime=float(status.get("downtimeSeconds", 0)),
               run_seconds=run_seconds, acknowledged=len(load.acknowledged), failed=load.refused,
               slowest=load.slowest, lost=len(load.missing()))


def table(rows: Sequence[Row], posts: int) -> list[str]:
    lines = [f"bench.online: release 3.0 (0006 expand, 0007 expand, 0008 contract) on the demo at 2.0, {posts} posts, "
             "2 web replicas + worker, under HTTP load", "",
             f"{'strategy':<9} {'result':<10} {'downtime':>9} {'run':>7} {'writes':>7} {'failed':>7} {'slowest':>8} "
             f"{'lost':>5}"]
    for row in rows:
        lines.append(f"{row.strategy:<9} {row.phase:<10} {row.downtime:>8.1f}s {row.run_seconds:>6.1f}s "
                     f"{row.acknowledged:>7} {row.failed:>7} {row.slowest:>7.2f}s {row.lost:>5}")
    lines += ["", "downtime: status.downtimeSeconds (the app no longer serving -> available again); run: apply -> "
              "end; writes: posts acknowledged (201); failed: requests refused or unanswered; slowest: the "
              "slowest answered request; lost: acknowledged posts missing afterwards"]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.online", description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=2000, help="posts in each database (default 2000)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds a run may take (default 600)")
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)

    cluster = Cluster()
    cluster.up()
    suffix = secrets.token_hex(3)
    stacks = {strategy: BlogStack(cluster, namespace=f"bench-{strategy.lower()}-{suffix}",
                                  database=f"bench_{strategy.lower()}_{suffix}", release="2.0")
              for strategy in STRATEGIES}
    operator = LocalOperator(cluster, f"operator-bench-online-{suffix}",
                             namespaces=tuple(stack.namespace for stack in stacks.values()))
    rows: list[Row] = []
    try:
        for strategy, stack in stacks.items():
            progress(f"{strategy}: deploying {stack.namespace} at release 2.0 (0005), {args.posts} posts")
            stack.deploy(posts=args.posts, migrate_to="0005_ensure_data_integrity", say=progress)
        operator.start()
        operator.wait_ready()
        rows = [run_release(stack, strategy, args.timeout) for strategy, stack in stacks.items()]
    finally:
        for stack in stacks.values():
            cleanup(stack, [operator], [])
    lines = table(rows, args.posts)
    print("\n".join(lines))
    if args.output:
        args.output.write_text("\n".join(lines) + "\n")
    return 0 if all(row.phase == "Succeeded" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
