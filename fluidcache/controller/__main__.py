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
    w = ap.add_argument_group("admission webhook (cache affinity), served over TLS")
    w.add_argument("--webhook-port", type=int, help="serve the webhook on this port")
    w.add_argument(
        "--webhook-host",
        default="127.0.0.1",
        help="the name the API server dials (registered by URL; off-cluster, e.g. tests)",
    )
    w.add_argument(
        "--webhook-service",
        help="NAMESPACE/NAME[:PORT] (port 443 by default): register the webhook by this Service"
        " instead of a URL (in a cluster)",
    )
    w.add_argument("--webhook-addr", help="listen address (default: --webhook-host)")
    w.add_argument("--webhook-cert", help="serving certificate (PEM)")
    w.add_argument("--webhook-key", help="its private key (PEM)")
    w.add_argument("--webhook-ca", help="the CA that signed it: the configuration's caBundle")
    args = ap.parse_args(argv)
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    if args.interval:
        os.environ["FLUIDCACHE_CONTROLLER_INTERVAL"] = str(args.interval)
    if args.webhook_port:
        if not (args.webhook_cert and args.webhook_key):
            ap.error("--webhook-port needs --webhook-cert and --webhook-key")
        os.environ["FLUIDCACHE_WEBHOOK_PORT"] = str(args.webhook_port)
        os.environ["FLUIDCACHE_WEBHOOK_HOST"] = args.webhook_host
        os.environ["FLUIDCACHE_WEBHOOK_ADDR"] = args.webhook_addr or args.webhook_host
        os.environ["FLUIDCACHE_WEBHOOK_CERT"] = args.webhook_cert
        os.environ["FLUIDCACHE_WEBHOOK_KEY"] = args.webhook_key
        os.environ["FLUIDCACHE_WEBHOOK_CA"] = args.webhook_ca or ""
        if args.webhook_service:
            from fluidcache.controller.admission import parse_service

            try:
                parse_service(args.webhook_service)
            except ValueError as e:
                ap.error(str(e))
            os.environ["FLUIDCACHE_WEBHOOK_SERVICE"] = args.webhook_service
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
