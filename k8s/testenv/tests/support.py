"""What the control-plane tests share: a control plane with five kwok nodes (kwok-node-1 tainted
NoSchedule, kwok-node-2 labelled disk=ssd, zones alternating), a fluidcache master and worker on
the host, and the controller as a process; helpers to wait and to build resources."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme
from cluster import ControlPlane, default_bin_dir, free_port, missing_binaries

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from tests.cluster import Cluster  # noqa: E402

T = TypeVar("T")
NS = "default"
LABEL = "fluid.io/s-default-demo"


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 90.0) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (subprocess.CalledProcessError, KeyError, json.JSONDecodeError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


class Env:
    def __init__(self, cp: ControlPlane, fc: Cluster, data: Path) -> None:
        self.cp, self.fc, self.data = cp, fc, data

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return str(self.cp.kubectl(*args, input=input, check=check).stdout)

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def apply(self, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.cp.kubectl("apply", "-f", "-", input=json.dumps(obj), check=False)

    def token_secrets(self, *datasets: str) -> None:
        """The cluster token Secret each dataset's runtime reads (``<name>-fluidcache-token``)."""
        for name in datasets:
            token = f"--from-literal=token={self.fc.token}"
            self.kubectl("create", "secret", "generic", f"{name}-fluidcache-token", token)

    def labelled(self, label: str = LABEL) -> set[str]:
        nodes = self.get("nodes", "-l", f"{label}=true")["items"]
        return {n["metadata"]["name"] for n in nodes}

    def running_workers(self, name: str) -> dict[str, str]:
        pods = self.get(
            "pods",
            "-n",
            NS,
            "-l",
            f"data.fluidcache.io/dataset={name},app.kubernetes.io/component=worker",
        )["items"]
        return {
            p["metadata"]["name"]: p["spec"].get("nodeName", "")
            for p in pods
            if p.get("status", {}).get("phase") == "Running"
        }


@contextlib.contextmanager
def running_env(
    root: Path,
    files: dict[str, bytes],
    controller_args: Sequence[str] = (),
    master_dataset: str = "demo",
    nodes: int = 5,
) -> Iterator[Env]:
    missing = missing_binaries()
    if missing:
        pytest.fail(
            f"missing {', '.join(missing)} in {default_bin_dir()}:"
            " run `bash k8s/testenv/build.sh` first (about 30-60 min once; cached after)"
        )
    data = root / "src"
    for rel, blob in files.items():
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(blob)
    fc = Cluster(root / "fc")
    controller: subprocess.Popen[bytes] | None = None
    log = root / "controller.log"
    try:
        fc.start_master(
            f"local://{data}",
            extra=(
                "--dataset",
                master_dataset,
                "--backup-dir",
                str(root / "backups"),
                "--backup-root",  # where a DataBackup's local:///DIR may write
                str(root / "exports"),
            ),
        )
        fc.start_worker("w1", f"MEM:{root / 'w1'}:64Mi", node="host")
        with ControlPlane(nodes=nodes) as cp:
            e = Env(cp, fc, data)
            e.kubectl("taint", "nodes", "kwok-node-1", "dedicated=infra:NoSchedule")
            e.kubectl("label", "nodes", "kwok-node-2", "disk=ssd")
            e.kubectl("apply", "-f", str(ROOT / "k8s/crds"))
            e.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
            e.token_secrets("demo", "other")
            with log.open("wb") as out:
                controller = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "fluidcache.controller",
                        "--kubeconfig",
                        str(cp.kubeconfig),
                        "--interval",
                        "2",
                        "--namespace",
                        NS,
                        *controller_args,
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                    env={**os.environ, "FLUIDCACHE_CONTROLLER_JOB_POLL": "1"},
                )
                try:
                    yield e
                finally:
                    controller.terminate()
                    try:
                        controller.wait(15)
                    except subprocess.TimeoutExpired:
                        controller.kill()
                    print(
                        "---- controller log (tail) ----\n"
                        + "\n".join(log.read_text().splitlines()[-60:])
                    )
    finally:
        fc.stop()


def webhook_args(root: Path, host: str = "127.0.0.1") -> list[str]:
    """The controller's webhook flags: a free port on 127.0.0.1 and a serving certificate for
    ``host`` from a CA made here (trustme), all files in ``root``."""
    ca = trustme.CA()
    cert = ca.issue_cert(host)
    cert.private_key_pem.write_to_path(str(root / "tls.key"))
    cert.cert_chain_pems[0].write_to_path(str(root / "tls.crt"))
    ca.cert_pem.write_to_path(str(root / "ca.crt"))
    return [
        f"--webhook-port={free_port()}",
        f"--webhook-cert={root / 'tls.crt'}",
        f"--webhook-key={root / 'tls.key'}",
        f"--webhook-ca={root / 'ca.crt'}",
    ]


def dataset(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "data.fluidcache.io/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"mounts": [{"mountPoint": "local:///srv/data", "name": "data"}], **spec},
    }


def runtime(name: str, endpoint: str, replicas: int = 2, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "data.fluidcache.io/v1alpha1",
        "kind": "FluidCacheRuntime",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "master": {"endpoint": endpoint},
            "tieredstore": {
                "levels": [
                    {
                        "mediumtype": "MEM",
                        "path": "/dev/shm",
                        "quota": "1Gi",
                        "high": "0.95",
                        "low": "0.7",
                    }
                ]
            },
            **spec,
        },
    }
