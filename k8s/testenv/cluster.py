"""A real Kubernetes control plane on one machine, for tests.

etcd + kube-apiserver + kube-controller-manager + kube-scheduler, and kwok standing in for the
kubelets of a few fake Nodes, all on 127.0.0.1 free ports in a temp dir. The binaries come from
``build.sh`` (same directory); nothing here downloads anything.

    with ControlPlane(nodes=3) as cp:           # starts, waits until ready (bounded)
        cp.kubectl("get", "nodes")               # or KUBECONFIG=cp.kubeconfig
    # everything stopped, temp dir removed (kept on failure when keep_on_failure=True)

CLI (for a person): ``python k8s/testenv/cluster.py [--nodes 3]`` starts it, prints an
``export KUBECONFIG=...`` line and runs until Ctrl-C.

Auth: a static token (admin, group system:masters) from a token file; the serving cert and the
service-account key pair are made here with ``cryptography``. Only loopback addresses are dialled.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parents[1]) not in sys.path:
    sys.path.append(str(HERE.parents[1]))  # the repository, when run as a script: bench.procs
from bench.procs import free_port  # noqa: E402 - after the path it needs

FAKE_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
NODE_LABEL = "fluidcache.io/test-node"
BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
)


class ControlPlaneError(RuntimeError):
    pass


def pinned_versions() -> dict[str, str]:
    out = {}
    for line in (HERE / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def default_bin_dir() -> Path:
    env = os.environ.get("FLUIDCACHE_K8S_BIN")
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "fluidcache" / f"k8s-{pinned_versions()['K8S_VERSION']}" / "bin"


def fluid_dir(bin_dir: Path | None = None) -> Path:
    """Upstream Fluid at the pinned FLUID_VERSION, as ``build.sh`` copies it out of the module:
    ``crds/`` (its chart's CRDs) and ``samples/`` (its documented examples, Markdown), in
    ``<cache>/fluid-<version>`` beside the binaries."""
    bin_dir = bin_dir or default_bin_dir()
    return bin_dir.parent / f"fluid-{pinned_versions()['FLUID_VERSION']}"


def missing_binaries(bin_dir: Path | None = None) -> list[str]:
    bin_dir = bin_dir or default_bin_dir()
    return [b for b in BINARIES if not os.access(bin_dir / b, os.X_OK)]


def _write_pki(d: Path) -> None:
    """CA, apiserver serving cert, service-account RSA key pair (PEM files in d)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)

    def pem_key(key) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fluidcache-test-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    sans = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"),
        x509.DNSName("kubernetes.default.svc.cluster.local"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),  # first IP of the service range
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    (d / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "apiserver.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "apiserver.key").write_bytes(pem_key(key))
    (d / "sa.key").write_bytes(pem_key(sa_key))
    (d / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    for f in ("apiserver.key", "sa.key"):
        (d / f).chmod(0o600)


class ControlPlane:
    def __init__(
        self,
        nodes: int = 3,
        bin_dir: Path | None = None,
        workdir: Path | None = None,
        log: Callable[[str], None] | None = None,
        keep_on_failure: bool = False,
    ) -> None:
        self.nodes = nodes
        self.bin_dir = Path(bin_dir) if bin_dir else default_bin_dir()
        self._own_workdir = workdir is None
        self.workdir = (
            Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="fluidcache-k8s-"))
        )
        self.log = log or (lambda msg: print(f"[control-plane] {msg}", file=sys.stderr, flush=True))
        self.keep_on_failure = keep_on_failure
        self.token = secrets.token_hex(16)
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.ports: dict[str, int] = {}
        self.timings: dict[str, float] = {}
        self.failed = False
        self._logfiles: list = []

    # ---- paths -------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    def _bin(self, name: str) -> str:
        return str(self.bin_dir / name)

    # ---- lifecycle ---------------------------------------------------------
    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.failed = True
        self.stop()

    def start(self, timeout: float = 180.0) -> ControlPlane:
        missing = missing_binaries(self.bin_dir)
        if missing:
            raise ControlPlaneError(
                f"missing binaries in {self.bin_dir}: {', '.join(missing)}"
                " (run k8s/testenv/build.sh)"
            )
        deadline = time.monotonic() + timeout
        t0 = time.monotonic()
        try:
            self._prepare()
            self._start_etcd(deadline)
            self._start_apiserver(deadline)
            self._write_kubeconfig()
            self._start_controllers(deadline)
            self._start_kwok_and_nodes(deadline)
            self._wait("default ServiceAccount", deadline, self._default_sa_exists)
        except BaseException:
            self.failed = True
            self._dump_logs()
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - t0
        self.log(
            f"ready in {self.timings['total']:.1f}s ({self.server}, {self.nodes} kwok nodes, "
            f"kubeconfig {self.kubeconfig})"
        )
        return self

    def stop(self) -> None:
        for _name, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.log(f"{name} (pid {p.pid}) ignored SIGTERM; killing")
                p.kill()
                p.wait(timeout=5)
        self.procs.clear()
        for f in self._logfiles:
            f.close()
        self._logfiles = []
        if self._own_workdir and self.workdir.exists():
            if self.failed and self.keep_on_failure:
                self.log(f"kept {self.workdir} for inspection")
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- steps -------------------------------------------------------------
    def _prepare(self) -> None:
        for d in ("pki", "etcd", "logs", "kcm", "scheduler"):
            (self.workdir / d).mkdir(parents=True, exist_ok=True)
        _write_pki(self.workdir / "pki")
        tokens = self.workdir / "pki" / "tokens.csv"
        tokens.write_text(f'{self.token},admin,admin,"system:masters"\n')
        tokens.chmod(0o600)
        for name in ("etcd_client", "etcd_peer", "apiserver", "kcm", "scheduler"):
            self.ports[name] = free_port()

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        logf = open(self.workdir / "logs" / f"{name}.log", "ab")  # noqa: SIM115 (closed in stop)
        self._logfiles.append(logf)
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,  # a Ctrl-C in the terminal goes to us; we stop them in order
        )
        self.procs.append((name, p))
        return p

    def _wait(self, what: str, deadline: float, check: Callable[[], bool]) -> None:
        t0 = time.monotonic()
        while True:
            for name, p in self.procs:
                if p.poll() is not None:
                    raise ControlPlaneError(
                        f"{name} exited with code {p.returncode} while waiting for {what}"
                    )
            try:
                if check():
                    self.timings[what] = time.monotonic() - t0
                    self.log(f"{what} ready after {self.timings[what]:.1f}s")
                    return
            except (OSError, urllib.error.URLError, ValueError, subprocess.SubprocessError):
                pass
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"timed out waiting for {what}")
            time.sleep(0.25)

    def _start_etcd(self, deadline: float) -> None:
        c, p = self.ports["etcd_client"], self.ports["etcd_peer"]
        self._spawn(
            "etcd",
            [
                self._bin("etcd"),
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{c}",
                f"--advertise-client-urls=http://127.0.0.1:{c}",
                f"--listen-peer-urls=http://127.0.0.1:{p}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{p}",
                f"--initial-cluster=default=http://127.0.0.1:{p}",
                "--unsafe-no-fsync",  # a throwaway store: no fsync, much faster on a shared disk
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{c}/health", timeout=2) as r:
                return json.load(r).get("health") == "true"

        self._wait("etcd", deadline, healthy)

    def _start_apiserver(self, deadline: float) -> None:
        pki = self.workdir / "pki"
        self._spawn(
            "kube-apiserver",
            [
                self._bin("kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.ports['etcd_client']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.ports['apiserver']}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--token-auth-file={pki / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                # its own endpoint would be 127.0.0.1, which Endpoints reject
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                f"--cert-dir={pki}",
            ],
        )
        self._wait("kube-apiserver", deadline, lambda: self._get("/readyz") == b"ok")

    def _start_controllers(self, deadline: float) -> None:
        pki = self.workdir / "pki"
        common = [
            f"--kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
        ]
        self._spawn(
            "kube-controller-manager",
            [
                self._bin("kube-controller-manager"),
                *common,
                f"--secure-port={self.ports['kcm']}",
                f"--cert-dir={self.workdir / 'kcm'}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=false",
                "--controllers=*",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                self._bin("kube-scheduler"),
                *common,
                f"--secure-port={self.ports['scheduler']}",
                f"--cert-dir={self.workdir / 'scheduler'}",
            ],
        )
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = (
            ssl.CERT_NONE
        )  # their self-signed serving certs; /healthz needs no auth

        def healthz(port: int) -> Callable[[], bool]:
            def check() -> bool:
                with urllib.request.urlopen(
                    f"https://127.0.0.1:{port}/healthz", timeout=2, context=insecure
                ) as r:
                    return r.read() == b"ok"

            return check

        self._wait("kube-controller-manager", deadline, healthz(self.ports["kcm"]))
        self._wait("kube-scheduler", deadline, healthz(self.ports["scheduler"]))

    def _start_kwok_and_nodes(self, deadline: float) -> None:
        kwok_cfg = self.workdir / "kwok.yaml"
        kwok_cfg.write_text(
            "apiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokConfiguration\noptions: {}\n"
        )
        key, value = FAKE_NODE_ANNOTATION
        self._spawn(
            "kwok",
            [
                self._bin("kwok"),
                f"--config={kwok_cfg}",
                f"--kubeconfig={self.kubeconfig}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={key}={value}",
                "--cidr=10.244.0.1/16",  # pod IPs are only written into objects: nothing dials them
                "--node-ip=10.0.0.2",
                "--node-lease-duration-seconds=40",
            ],
        )
        for i in range(self.nodes):
            self._api("POST", "/api/v1/nodes", self._node(i))
        names = {f"kwok-node-{i}" for i in range(self.nodes)}

        def nodes_ready() -> bool:
            items = json.loads(self._get("/api/v1/nodes"))["items"]
            ready = {
                n["metadata"]["name"]
                for n in items
                for c in n.get("status", {}).get("conditions", [])
                if c["type"] == "Ready" and c["status"] == "True"
            }
            return names <= ready

        self._wait(f"{self.nodes} kwok nodes", deadline, nodes_ready)

    def _node(self, i: int) -> dict:
        name = f"kwok-node-{i}"
        resources = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti"}
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {
                    FAKE_NODE_ANNOTATION[0]: FAKE_NODE_ANNOTATION[1],
                    "node.alpha.kubernetes.io/ttl": "0",
                },
                "labels": {
                    "type": "kwok",
                    NODE_LABEL: "true",
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "topology.kubernetes.io/zone": f"zone-{i % 2}",
                },
            },
            "status": {"allocatable": resources, "capacity": resources},
        }

    def _default_sa_exists(self) -> bool:
        self._get("/api/v1/namespaces/default/serviceaccounts/default")
        return True

    def _write_kubeconfig(self) -> None:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "fluidcache-test",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.workdir / "pki" / "ca.crt"),
                    },
                }
            ],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "fluidcache-test",
                    "context": {"cluster": "fluidcache-test", "user": "admin"},
                }
            ],
            "current-context": "fluidcache-test",
        }
        self.kubeconfig.write_text(
            json.dumps(cfg, indent=2)
        )  # JSON is YAML: kubectl and clients read it
        self.kubeconfig.chmod(0o600)

    # ---- API helpers -------------------------------------------------------
    def _ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.workdir / "pki" / "ca.crt"))

    def _api(self, method: str, path: str, body: dict | None = None) -> bytes:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10, context=self._ssl()) as r:
            return r.read()

    def _get(self, path: str) -> bytes:
        return self._api("GET", path)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self._bin("kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def _dump_logs(self, lines: int = 25) -> None:
        logs = self.workdir / "logs"
        if not logs.exists():
            return
        for f in sorted(logs.glob("*.log")):
            tail = f.read_text(errors="replace").splitlines()[-lines:]
            self.log(f"--- last {len(tail)} lines of {f.name} ---\n" + "\n".join(tail))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--bin-dir", type=Path, default=None)
    ap.add_argument("--timeout", type=float, default=180.0)
    args = ap.parse_args()
    cp = ControlPlane(nodes=args.nodes, bin_dir=args.bin_dir, keep_on_failure=True)
    cp.start(timeout=args.timeout)
    stop = False

    def on_signal(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
    try:
        while not stop:
            for name, p in cp.procs:
                if p.poll() is not None:
                    cp.failed = True
                    cp.log(f"{name} exited with code {p.returncode}")
                    cp._dump_logs()
                    stop = True
            time.sleep(0.5)
    finally:
        cp.stop()
    return 1 if cp.failed else 0


if __name__ == "__main__":
    sys.exit(main())
