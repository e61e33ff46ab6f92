"""`devcluster`: a real single-node Kubernetes on this machine (up, down, status, kubeconfig, env)."""

from __future__ import annotations

import argparse
import json
import shlex

from devcluster.build import ensure_binaries
from devcluster.cluster import Cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devcluster", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="build what is missing, start what is not running (idempotent)")
    up.add_argument("--with-scheduler", action="store_true",
                    help="run kube-scheduler too (by default the kubelet binds pods itself)")
    commands.add_parser("down", help="stop every process devcluster started; leave no mount behind")
    status = commands.add_parser("status", help="each component: pid, memory, log")
    status.add_argument("--json", action="store_true")
    commands.add_parser("kubeconfig", help="print the admin kubeconfig's path")
    commands.add_parser("env", help="print shell exports for kubectl and helm: eval \"$(devcluster env)\"")
    commands.add_parser("build", help="build the binaries into the cache (up does it too)")
    args = parser.parse_args(argv)

    cluster = Cluster()
    if args.command == "up":
        cluster.up(with_scheduler=args.with_scheduler)
    elif args.command == "down":
        cluster.down()
    elif args.command == "status":
        rows = cluster.status()
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                state = f"running pid {row['pid']:<7} {row['rss_mib']:>7} MiB" if row["running"] else "stopped"
                print(f"{row['component']:<24} {state:<36} {row['log']}")
        return 0 if cluster.running() else 3
    elif args.command == "kubeconfig":
        print(cluster.kubeconfig)
    elif args.command == "env":
        env = cluster.tool_env()
        print(f"export KUBECONFIG={shlex.quote(env['KUBECONFIG'])}")
        print(f"export PATH={shlex.quote(env['PATH'])}")
    elif args.command == "build":
        ensure_binaries()
    return 0
