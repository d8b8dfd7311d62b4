"""Several hosts on one machine: a master, three workers and a client, each in a network
namespace of its own on a bridge, running the real processes. A worker's link is cut (``ip link
set down``) or made slow and lossy inside its namespace: delay and jitter by tests/netem.py (an
NFQUEUE delay emulator, as this kernel has no sch_netem), a token bucket's rate (``tc tbf``) and
loss by an nftables rule dropping packets at random both ways. The delay shows in the round trip
to that worker alone; reads complete byte-exact or fail with a clear error within a bounded time,
and with blocks on two workers they route around the slow one. Everything (rules, qdiscs,
processes, namespaces, veths, the bridge) is removed afterwards, also when a test fails. Needs
root, iptables and nft.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fluidcache.common.config import TOKEN_FILE_ENV, write_token
from tests.netem import delayed
from tests.procs import Proc
from tests.reliability import Scenario

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

_ids = itertools.count()
PORT = 7000
READ_BOUND = 90.0  # seconds a read may take with a worker cut off or slowed

CLIENT = """
import asyncio, hashlib, sys, time
from fluidcache.client import AsyncClient
from fluidcache.common import errors
async def main():
    start = time.monotonic()
    try:
        async with AsyncClient(sys.argv[1], open(sys.argv[2]).read().strip(),
                               short_circuit=False, meta_ttl=1) as c:
            f = await c.open("/f.bin")
            data = await f.read()
        print("sha", hashlib.sha256(data).hexdigest(), round(time.monotonic() - start, 2))
    except errors.FluidcacheError as e:
        print("error", type(e).__name__, e.message, round(time.monotonic() - start, 2))
asyncio.run(main())
"""


def ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, timeout=20)


@dataclass
class Net:
    """A bridge and one namespace per host; ``hosts[name]`` is its address."""

    tag: str
    subnet: str
    hosts: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    impairments: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def veth(self, host: str) -> str:
        return f"{self.tag}{host}"[:15]

    def add(self, host: str) -> str:
        address = f"{self.subnet}.{len(self.hosts) + 2}"
        ns, outside = self.ns(host), self.veth(host)
        ip("netns", "add", ns)
        ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("link", "set", outside, "master", f"{self.tag}br", "up")
        ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        self.hosts[host] = address
        return address

    def run(self, host: str, argv: list[str], env: dict[str, str]) -> Proc:
        proc = Proc(["ip", "netns", "exec", self.ns(host), *argv], env=env)
        self.procs.append(proc)
        return proc

    def slow(
        self, host: str, delay: int = 200, jitter: int = 40, loss: int = 5, rate: str = "2mbit"
    ) -> str:
        """Make the host's link slow and lossy from inside its namespace; returns what was applied.

        Its incoming packets wait ``delay`` ± ``jitter`` ms (tests/netem.py: this kernel has no
        sch_netem, so no netem delay), leave at ``rate`` (a token bucket) and ``loss`` % of the
        packets are dropped at random in and out (an nftables rule). Undone when the network
        goes (the delay process stopped and its rule removed first).
        """
        self.impairments.enter_context(delayed(self.ns(host), delay, jitter))
        tbf = ["tbf", "rate", rate, "burst", "32kbit", "latency", "400ms"]
        tc = ["ip", "netns", "exec", self.ns(host), "tc", "qdisc", "add", "dev", "eth0", "root"]
        subprocess.run([*tc, *tbf], check=True, capture_output=True, timeout=20)
        drop = f"numgen random mod 100 < {loss} drop"
        rules = (
            "table inet fcloss {\n"
            f"  chain in {{ type filter hook input priority 0; policy accept; {drop}; }}\n"
            f"  chain out {{ type filter hook output priority 0; policy accept; {drop}; }}\n"
            "}\n"
        )
        subprocess.run(
            ["ip", "netns", "exec", self.ns(host), "nft", "-f", "-"],
            input=rules.encode(),
            check=True,
            capture_output=True,
            timeout=20,
        )
        return (
            f"delay {delay} ms ± {jitter} ms in (NFQUEUE emulator), tbf rate {rate} out, "
            f"nft drop {loss}% in and out"
        )


@contextlib.contextmanager
def network(hosts: list[str]) -> Iterator[Net]:
    n = next(_ids)
    net = Net(tag=f"fc{os.getpid() % 10000}{n}", subnet=f"10.{77 + n % 100}.{os.getpid() % 250}")
    try:
        ip("link", "add", f"{net.tag}br", "type", "bridge")
        ip("link", "set", f"{net.tag}br", "up")
        for host in hosts:
            net.add(host)
        yield net
    finally:
        with contextlib.suppress(Exception):
            net.impairments.close()
        for proc in reversed(net.procs):
            with contextlib.suppress(Exception):
                proc.stop()
        for host in hosts:
            ip("link", "del", net.veth(host), check=False)
            ip("netns", "del", net.ns(host), check=False)
        ip("link", "del", f"{net.tag}br", check=False)


def wait_ready(path: Path, proc: Proc, timeout: float = 40.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text().strip()
        assert proc.popen.poll() is None, proc.output
        time.sleep(0.1)
    raise AssertionError(f"not ready within {timeout} s:\n{proc.output}")


@pytest.fixture
def hosts(workdir: Path) -> Iterator[tuple[Net, Path, bytes, str]]:
    src = workdir / "src"
    src.mkdir()
    data = random.Random(11).randbytes(6 * 2**20 + 5)
    (src / "f.bin").write_bytes(data)
    token_file = workdir / "token"
    write_token(token_file)
    env = {TOKEN_FILE_ENV: str(token_file)}
    fc = [sys.executable, "-m", "fluidcache"]
    with network(["m", "w0", "w1", "w2", "c"]) as net:
        m = net.hosts["m"]
        master = net.run(
            "m",
            [
                *fc,
                "master",
                f"local://{src}",
                "--data-dir",
                str(workdir / "m"),
                "--host",
                m,
                "--port",
                str(PORT),
                "--block-size",
                "1Mi",
                "--heartbeat-interval",
                "1",
                "--worker-timeout",
                "6",
                "--ready-file",
                str(workdir / "m.ready"),
            ],
            env,
        )
        url = wait_ready(workdir / "m.ready", master)
        for w in ("w0", "w1", "w2"):
            proc = net.run(
                w,
                [
                    *fc,
                    "worker",
                    "--master",
                    url,
                    "--id",
                    w,
                    "--node",
                    w,
                    "--host",
                    net.hosts[w],
                    "--port",
                    str(PORT),
                    "--tier",
                    f"MEM:{workdir / w}:64Mi",
                    "--ready-file",
                    str(workdir / f"{w}.ready"),
                ],
                env,
            )
            wait_ready(workdir / f"{w}.ready", proc)
        yield net, token_file, data, url


def read(net: Net, url: str, token_file: Path, script: str = CLIENT) -> tuple[str, float]:
    start = time.monotonic()
    proc = net.run("c", [sys.executable, "-c", script, url, str(token_file)], {})
    proc.wait(READ_BOUND + 30)
    line = proc.lines[-1] if proc.lines else proc.output
    return line, time.monotonic() - start


def check(line: str, data: bytes, took: float) -> None:
    assert took < READ_BOUND, (line, took)
    kind = line.split()[0]
    assert kind in ("sha", "error"), line
    if kind == "sha":
        assert line.split()[1] == hashlib.sha256(data).hexdigest(), "wrong bytes"
    else:
        assert len(line.split()) > 3, f"an error without a message: {line}"


def test_each_host_has_its_own_address(hosts: tuple[Net, Path, bytes, str]) -> None:
    net, token_file, data, url = hosts
    assert len(set(net.hosts.values())) == 5
    line, took = read(net, url, token_file)
    assert line.startswith("sha "), line
    check(line, data, took)


def test_cut_worker_then_back(hosts: tuple[Net, Path, bytes, str]) -> None:
    net, token_file, data, url = hosts
    line, took = read(net, url, token_file)  # warm: blocks spread over the three workers
    check(line, data, took)
    ip("link", "set", net.veth("w0"), "down")
    line, took = read(net, url, token_file)
    check(line, data, took)
    ip("link", "set", net.veth("w0"), "up")
    line, took = read(net, url, token_file)
    assert line.startswith("sha "), line
    check(line, data, took)


def test_reads_through_a_slow_lossy_worker_are_byte_exact(
    hosts: tuple[Net, Path, bytes, str],
) -> None:
    net, token_file, data, url = hosts
    line, took = read(net, url, token_file)
    check(line, data, took)
    how = net.slow("w1")
    line, took = read(net, url, token_file)
    assert line.startswith("sha "), (how, line)
    check(line, data, took)


RTT = """
import json, socket, sys, time
addresses, port, rounds = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
out = {host: [] for host in addresses}
for _ in range(rounds):
    for host, address in addresses.items():
        start = time.monotonic()
        with socket.create_connection((address, port), timeout=10):
            out[host].append((time.monotonic() - start) * 1000)
print(json.dumps(out))
"""
WORKERS = ("w0", "w1", "w2")


def connect_ms(net: Net, rounds: int = 21) -> dict[str, list[float]]:
    """TCP connect times (ms) from the client to each worker's port, ``rounds`` each, interleaved:
    one round trip, the SYN out and the worker's SYN-ACK back."""
    addresses = json.dumps({w: net.hosts[w] for w in WORKERS})
    proc = net.run("c", [sys.executable, "-c", RTT, addresses, str(PORT), str(rounds)], {})
    assert proc.wait(120) == 0, proc.output
    got: dict[str, list[float]] = json.loads(proc.lines[-1])
    return got


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    return {host: round(statistics.median(ms), 2) for host, ms in samples.items()}


# struct tcp_info (linux/tcp.h): tcpi_total_retrans is the u32 at byte 100, tcpi_rcv_ooopack
# (segments this socket took out of order) the u32 at byte 224.
TCP_INFO = """
import socket, struct
def tcp_info(sock, offset):
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    return struct.unpack_from("I", info, offset)[0]
"""
SINK = (
    TCP_INFO
    + """
import hashlib, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
conn, _ = server.accept()
digest = hashlib.sha256()
while chunk := conn.recv(1 << 16):
    digest.update(chunk)
print("got", digest.hexdigest(), tcp_info(conn, 224), flush=True)
conn.close()
"""
)
SEND = (
    TCP_INFO
    + """
import sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60) as s:
    s.sendall(open(sys.argv[3], "rb").read())
    s.shutdown(socket.SHUT_WR)
    s.recv(1)  # the sink's close: everything was acknowledged
    print("retransmitted", tcp_info(s, 100), flush=True)
"""
)


def send_to(net: Net, host: str, blob: Path) -> tuple[str, int, int]:
    """Send ``blob`` from the client to ``host`` on one TCP connection. Returns the sha256 of what
    arrived, how many segments the receiving socket took out of order and how many the sender
    retransmitted."""
    address, port = net.hosts[host], str(PORT + 1)
    sink = net.run(host, [sys.executable, "-c", SINK, address, port], {})
    sink.wait_for("listening", timeout=30)
    sender = net.run("c", [sys.executable, "-c", SEND, address, port, str(blob)], {})
    assert sender.wait(120) == 0, sender.output
    _, digest, out_of_order = sink.wait_for("got ", timeout=60).split()
    retransmitted = sender.wait_for("retransmitted ", timeout=10).split()[1]
    return digest, int(out_of_order), int(retransmitted)


def test_delay_shows_in_the_round_trip_to_that_worker_only(
    hosts: tuple[Net, Path, bytes, str],
) -> None:
    net, token_file = hosts[0], hosts[1]
    delay, jitter = 150, 30
    blob = token_file.parent / "blob"
    blob.write_bytes(random.Random(5).randbytes(4 * 2**20))
    before = connect_ms(net)
    with delayed(net.ns("w1"), delay) as fixed:
        steady = connect_ms(net)
    with delayed(net.ns("w1"), delay, jitter) as jittered:
        jumpy = connect_ms(net)
        digest, out_of_order, retransmitted = send_to(net, "w1", blob)
    after = connect_ms(net)
    base, held, varied, back = medians(before), medians(steady), medians(jumpy), medians(after)
    figures = f"medians (ms) before {base}, {delay} ms: {held}, {delay} ± {jitter} ms: {varied}, "
    figures += f"after {back}"
    # The SYN waits the delay: every connect to w1 takes at least that long, its median rose
    # by at least the delay; with jitter, at least the delay less the jitter.
    assert min(steady["w1"]) >= delay and held["w1"] - base["w1"] >= delay, figures
    assert min(jumpy["w1"]) >= delay - jitter, figures
    assert varied["w1"] - base["w1"] >= delay - jitter, figures
    # Jitter never reorders a flow: 4 MiB on one connection arrive whole, none out of order, and
    # the delayer dropped nothing (a drop, refilled by a retransmission, also shows as disorder).
    assert digest == hashlib.sha256(blob.read_bytes()).hexdigest()
    delayer = jittered.wait_for("passed ")
    counts = f"delayer: {delayer}; sender retransmitted {retransmitted}"
    assert delayer.endswith(" dropped 0 0"), counts
    assert out_of_order == 0, f"{out_of_order} segments out of order; {counts}"
    # Only w1's link is delayed, and only while the emulator runs.
    for other in ("w0", "w2"):
        assert held[other] < base[other] + delay / 2, figures
        assert varied[other] < base[other] + delay / 2, figures
    assert back["w1"] < base["w1"] + delay / 2, figures
    for proc in (fixed, jittered):
        assert proc.popen.poll() is not None and proc.wait_for("passed ").split()[1] != "0"
    rules = subprocess.run(
        ["ip", "netns", "exec", net.ns("w1"), "iptables", "-S", "INPUT"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "NFQUEUE" not in rules.stdout, rules.stdout
    print(figures)


SERVED = """
import asyncio, json, re, sys
import aiohttp
from fluidcache.client import AsyncClient
async def main():
    token = open(sys.argv[2]).read().strip()
    async with AsyncClient(sys.argv[1], token) as c:
        workers = await c.blocks.workers()
    out = {}
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer " + token}) as s:
        for w in workers:
            async with s.get(w.address + "/metrics") as resp:
                text = await resp.text()
            m = re.search(r'^fluidcache_read_bytes_total{origin="remote"} (\\S+)$', text, re.M)
            out[w.worker_id] = float(m.group(1)) if m else 0.0
    print(json.dumps(out))
asyncio.run(main())
"""


def served(net: Net, url: str, token_file: Path) -> dict[str, float]:
    """Bytes each worker has sent readers (its ``fluidcache_read_bytes_total{origin="remote"}``)."""
    line, _ = read(net, url, token_file, SERVED)
    got: dict[str, float] = json.loads(line)
    return got


@pytest.mark.reliability
def test_slow_lossy_worker_with_replicas_is_routed_around(
    hosts: tuple[Net, Path, bytes, str], scenario: Scenario
) -> None:
    net, token_file, data, url = hosts
    scenario.title = (
        "a slow, lossy link (delay, jitter, loss, low rate) to one of three workers, every block "
        "on two of them"
    )
    load = net.run(
        "c",
        [sys.executable, "-m", "fluidcache", "load", "--replicas", "2", "--master", url],
        {TOKEN_FILE_ENV: str(token_file)},
    )
    assert load.wait(60) == 0 and "Complete" in load.output, load.output
    start = served(net, url, token_file)
    line, took = read(net, url, token_file)
    check(line, data, took)
    healthy = served(net, url, token_file)
    unimpaired = {w: int(healthy[w] - start.get(w, 0.0)) for w in healthy}
    delay, jitter = 200, 40
    how = net.slow("w1", delay=delay, jitter=jitter, loss=5, rate="2mbit")
    connect = medians(connect_ms(net, rounds=7))
    # The delay is in force (a lost SYN or SYN-ACK only adds a retransmission's second).
    assert connect["w1"] >= delay - jitter, connect
    scenario.injected = (
        f"`fluidcache load --replicas 2` of a {len(data)}-byte file (1 MiB blocks), then w1's "
        f"link impaired inside its namespace: {how}; a client in its own namespace reads the "
        "whole file"
    )
    before = served(net, url, token_file)
    line, took = read(net, url, token_file)
    after = served(net, url, token_file)
    check(line, data, took)
    assert line.startswith("sha "), (how, line)
    sent = {w: int(after[w] - before.get(w, 0.0)) for w in after}
    scenario.note(f"the read completed byte-exact in {took:.1f} s (sha256 matches the source)")
    scenario.note(f"bytes each worker sent the reader: {sent}")
    scenario.note(f"the same read before w1's link was impaired: {unimpaired}")
    scenario.figure("injected on w1's link", how)
    scenario.figure("TCP connect medians while impaired (ms)", connect)
    scenario.figure("read time", f"{took:.1f} s")
    scenario.figure("bytes from w1 in the same read before the impairment", unimpaired["w1"])
    scenario.figure("bytes from the slow worker w1", sent["w1"])
    scenario.figure("bytes from w0 and w2", sent["w0"] + sent["w2"])
    # Every block also lives on a healthy worker: the reader gets (nearly) all from those. The
    # slow one may finish one block it had started before its lateness showed, no more.
    assert sent["w0"] + sent["w2"] >= len(data) - 2**20, sent
    assert sent["w1"] <= 2**20, sent
