"""`python -m django_migration_operator`: runs the operator (cluster-wide, or in the listed namespaces)."""

from __future__ import annotations

import argparse
import asyncio

import kopf
import prometheus_client

from django_migration_operator import handlers as _handlers  # noqa: F401  (registers the handlers)

# Apps stopped at once: each one's dump and migrate keep about a core busy, so past the cores they only share them
# and every downtime grows, while the others lose nothing by waiting as they serve. On the 2-core test machine, 50
# runs at once had a median downtime of 1.18x one alone with 2, 2.4-2.75x with 4 (bench/README.md, "Scale").
DEFAULT_MAX_STOPPED_APPS = 2
# Runs planning at once: each plan Job starts Django, and 48 at once shared the cores with the first stopped apps
# (their downtime 31.6 s against 5.0 s alone, bench/README.md "Scale"); planning while the app serves costs nothing.
DEFAULT_MAX_PLANNING_RUNS = 2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="django-migration-operator", description=__doc__)
    parser.add_argument("--namespace", "-n", action="append", default=[],
                        help="watch only this namespace (repeatable); default: every namespace")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", metavar="URL",
                        help="the liveness endpoint kopf serves (default: %(default)s); 'off' to disable")
    parser.add_argument("--metrics", default="0.0.0.0:9090", metavar="ADDRESS:PORT",
                        help="where Prometheus metrics are served at /metrics (default: %(default)s); 'off' to disable")
    parser.add_argument("--log-format", choices=["plain", "full", "json"], default="full",
                        help="log lines as text with time and logger (full), message only (plain) or JSON objects")
    parser.add_argument("--lease-namespace", metavar="NAMESPACE",
                        help="where the one-run-per-database Leases live (default: the operator's own namespace in "
                             "a cluster, 'default' outside)")
    parser.add_argument("--max-stopped-apps", type=int, default=DEFAULT_MAX_STOPPED_APPS, metavar="N",
                        help="at most N runs stop their app at once; the others wait in Queued with the app serving "
                             "(default: %(default)s; 0: no limit)")
    parser.add_argument("--max-planning-runs", type=int, default=DEFAULT_MAX_PLANNING_RUNS, metavar="N",
                        help="at most N runs plan at once; the others wait in Queued with the app serving "
                             "(default: %(default)s; 0: no limit)")
    parser.add_argument("--verbose", action="store_true", help="debug logs")
    args = parser.parse_args(argv)
    # log_prefix None: each run's lines start with [namespace/name] in text, as under `kopf run`; JSON has the object
    # as fields. kopf.configure's own default is no prefix, which leaves 50 runs' lines indistinguishable.
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat[args.log_format.upper()], log_prefix=None)
    if args.metrics != "off":
        address, _, port = args.metrics.rpartition(":")
        prometheus_client.start_http_server(int(port), addr=address or "0.0.0.0")
    # standalone: one replica (the chart's Deployment is Recreate), so no peering with other kopf operators, whose
    # CRDs may exist in the cluster and which the chart grants no rights for.
    asyncio.run(kopf.operator(
        standalone=True, clusterwide=not args.namespace, namespaces=args.namespace,
        liveness_endpoint=None if args.liveness == "off" else args.liveness,
        memo=kopf.Memo(lease_namespace=args.lease_namespace, namespaces=args.namespace,
                       max_stopped_apps=args.max_stopped_apps, max_planning_runs=args.max_planning_runs)))


if __name__ == "__main__":
    main()
