"""``python -m fluidcache.controller``: run the controller (kopf) against the current cluster.

In a pod it uses its service account; elsewhere ``--kubeconfig``, ``$KUBECONFIG`` or
~/.kube/config. It watches every namespace unless ``--namespace`` names some.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fluidcache.controller", description=__doc__)
    ap.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, $KUBECONFIG)")
    ap.add_argument("--namespace", "-n", action="append", help="watch only these namespaces")
    ap.add_argument("--interval", type=float, help="seconds between reconciles of a runtime")
    ap.add_argument("--liveness", default="", help="e.g. http://0.0.0.0:8080/healthz")
    ap.add_argument("--verbose", "-v", action="store_true")
    args = ap.parse_args(argv)
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    if args.interval:
        os.environ["FLUIDCACHE_CONTROLLER_INTERVAL"] = str(args.interval)
    import kopf  # after the environment is set: the handlers read it at import

    import fluidcache.controller.handlers  # noqa: F401  (registers the handlers)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s controller %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(
        kopf.operator(
            standalone=True,
            clusterwide=not args.namespace,
            namespaces=args.namespace or (),
            liveness_endpoint=args.liveness or None,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
