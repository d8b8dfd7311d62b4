"""Link delay for the multi-host tests on kernels without sch_netem: netem's ``delay D J``.

``python -m tests.netem --delay MS --jitter MS`` runs inside a network namespace and takes the
packets an iptables ``NFQUEUE`` rule hands to its queue (through netfilterqueue, a binding of
libnetfilter_queue); it accepts each one DELAY ± JITTER ms (uniform) after it arrived, never
before an earlier packet of the same flow (protocol, addresses, ports), so TCP sees no
reordering. At most ``--limit`` packets are held: past that the kernel drops, as netem does past
its limit; nothing else is dropped. It prints ``ready`` once bound, and on SIGTERM accepts every
packet it still holds, prints its counts (packets passed, most held at once, and the kernel's
drops: past the limit, and for want of room in the socket to us) and exits.

``delayed(ns, ...)`` starts it in namespace ``ns``, sends it the packets arriving on ``dev``
and on the way out, whatever happened, removes the rule and stops the process. It delays what
arrives, as netem on an ifb does, so a round trip to the host grows by DELAY: the host's own
outgoing packets would still belong to its sockets while held, and TCP Small Queues would let a
sender have only two or so in flight (netem orphans the packets it holds; a user-space queue
cannot), so a bulk transfer would crawl.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tests.procs import Proc

if TYPE_CHECKING:
    from netfilterqueue import Packet

ROOT = Path(__file__).resolve().parents[1]
HEADER = 64  # bytes of each packet copied to us: an IPv4 header (at most 60) and the two ports


def flow(header: bytes) -> bytes:
    """The packet's flow: IPv4 protocol, addresses and (TCP/UDP) ports; the whole header else."""
    if len(header) < 20 or header[0] >> 4 != 4:
        return header[:40]
    ihl = (header[0] & 0x0F) * 4
    ports = header[ihl : ihl + 4] if header[9] in (6, 17) else b""
    return header[9:10] + header[12:20] + ports


class Delayer:
    """Holds packets and accepts each at its due time, in arrival order within its flow."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float, jitter: float, seed: int):
        self.loop, self.delay, self.jitter = loop, delay, jitter
        self.rng = random.Random(seed)
        self.flows: dict[bytes, deque[tuple[float, Packet]]] = {}  # due times rise in each
        self.held = 0
        self.passed = 0
        self.peak = 0

    def take(self, packet: Packet) -> None:
        key = flow(packet.get_payload())
        due = self.loop.time() + self.delay + self.rng.uniform(-self.jitter, self.jitter)
        held = self.flows.setdefault(key, deque())
        if held:
            due = max(due, held[-1][0])
        held.append((due, packet))
        # Timers due at the same time run in no set order: each one releases, from the head of
        # its flow, every packet due by then, so a flow leaves in the order it came.
        self.loop.call_at(due, self.release, key, due)
        self.held += 1
        self.peak = max(self.peak, self.held)

    def release(self, key: bytes, due: float) -> None:
        held = self.flows.get(key)
        while held and held[0][0] <= due:
            held.popleft()[1].accept()
            self.held -= 1
            self.passed += 1
        if held is not None and not held:
            del self.flows[key]

    def flush(self) -> None:
        """Accept everything still held, each flow in order."""
        for key, held in list(self.flows.items()):
            self.release(key, held[-1][0])


async def serve(args: argparse.Namespace) -> None:
    from netfilterqueue import COPY_PACKET, NetfilterQueue

    loop = asyncio.get_running_loop()
    delayer = Delayer(loop, args.delay / 1000, args.jitter / 1000, args.seed)
    queue = NetfilterQueue()
    # Room in the socket for the whole limit, each packet's message taking up to ~1 KiB: a
    # burst while this process waits for a core is queued, not dropped.
    sock_len = args.limit * 1024
    queue.bind(
        args.queue,
        delayer.take,
        max_len=args.limit,
        mode=COPY_PACKET,
        range=HEADER,
        sock_len=sock_len,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_reader(queue.get_fd(), queue.run, False)
    print("ready", flush=True)
    try:
        await stop.wait()
    finally:
        loop.remove_reader(queue.get_fd())
        delayer.flush()
        dropped = kernel_drops(args.queue)
        queue.unbind()
        print(f"passed {delayer.passed} peak {delayer.peak} dropped {dropped}", flush=True)


def kernel_drops(queue: int) -> str:
    """``queue_dropped user_dropped`` of ``queue`` in /proc/net/netfilter/nfnetlink_queue."""
    for line in Path("/proc/net/netfilter/nfnetlink_queue").read_text().splitlines():
        fields = line.split()
        if int(fields[0]) == queue:
            return f"{fields[5]} {fields[6]}"
    return "unknown"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.netem", description=__doc__)
    parser.add_argument("--queue", type=int, default=0, help="NFQUEUE number")
    parser.add_argument("--delay", type=float, required=True, help="milliseconds")
    parser.add_argument("--jitter", type=float, default=0.0, help="± milliseconds, uniform")
    parser.add_argument("--limit", type=int, default=10000, help="packets held at most")
    parser.add_argument("--seed", type=int, default=0, help="of the jitter's random numbers")
    args = parser.parse_args(argv)
    if not 0 <= args.jitter <= args.delay:
        parser.error(f"--jitter must be between 0 and --delay ({args.delay}), not {args.jitter}")
    if args.limit < 1:
        parser.error(f"--limit must be at least 1, not {args.limit}")
    asyncio.run(serve(args))


def iptables(ns: str, *args: str, check: bool = True) -> None:
    cmd = ["ip", "netns", "exec", ns, "iptables", "-w", "10", *args]
    subprocess.run(cmd, check=check, capture_output=True, timeout=30)


@contextlib.contextmanager
def delayed(
    ns: str, delay_ms: float, jitter_ms: float = 0.0, dev: str = "eth0", queue: int = 0
) -> Iterator[Proc]:
    """Packets arriving on ``dev`` in namespace ``ns`` wait ``delay_ms`` ± ``jitter_ms`` until
    the block ends; then the rule and the process are gone, also when the block raised."""
    argv = ["--queue", str(queue), "--delay", str(delay_ms), "--jitter", str(jitter_ms)]
    proc = Proc(["ip", "netns", "exec", ns, sys.executable, "-m", "tests.netem", *argv], cwd=ROOT)
    # --queue-bypass: were the process gone, packets would pass undelayed rather than vanish.
    rule = ["INPUT", "-i", dev, "-j", "NFQUEUE", "--queue-num", str(queue), "--queue-bypass"]
    try:
        proc.wait_for("ready", timeout=30)
        iptables(ns, "-A", *rule)
        yield proc
    finally:
        iptables(ns, "-D", *rule, check=False)
        proc.stop()


if __name__ == "__main__":
    main()
