"""`falapp-operator run`: start the operator against the current kubeconfig or in-cluster."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="falapp-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator")
    run.add_argument("-n", "--namespace", action="append", default=[],
                     help="watch FalApps only in these namespaces (repeatable; default: all)")
    run.add_argument("--log-format", choices=["text", "json"], default="text")
    run.add_argument("--verbose", action="store_true")
    run.add_argument("--liveness", default=None, help="kopf liveness endpoint, e.g. http://0.0.0.0:8081/healthz")
    run.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=None,
                     help="reconcile only while holding the leader Lease (FALAPP_LEADER_ELECT; default: off, "
                          "for a single process; the chart turns it on); it exits with status 1 on losing it")
    args = parser.parse_args(argv)

    import kopf  # imported here: nothing happens at import time of the package

    import falapp_operator.handlers  # noqa: F401  (registers the handlers)

    if args.namespace:  # read by OperatorSettings in the startup handler
        os.environ["FALAPP_WATCH_NAMESPACES"] = ",".join(args.namespace)
    if args.leader_elect is not None:
        os.environ["FALAPP_LEADER_ELECT"] = "true" if args.leader_elect else "false"
    kopf.configure(verbose=args.verbose,
                   log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL)
    logging.getLogger("falapp_operator").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:  # kopf logs every handled watch event at INFO: thousands per minute here
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    stop = asyncio.Event()  # set by the handlers when leadership is lost (a threading.Event would leave
    # kopf's waiting thread behind and hold up the exit)
    memo = kopf.Memo(stop=stop, lost_leadership=False)
    kopf.run(standalone=True, clusterwide=not args.namespace, namespaces=args.namespace,
             liveness_endpoint=args.liveness, memo=memo, stop_flag=stop)
    return 1 if memo.lost_leadership else 0


if __name__ == "__main__":
    sys.exit(main())
