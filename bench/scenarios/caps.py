"""Scenario "caps": a cold sequential read against sources of different per-connection caps.

The source is the object-store model of ``bench/shaper.py --per-conn`` (every connection capped,
``conn_latency`` to the first byte, ``conn_aggregate`` in all) at each cap of ``caps_mbps``. At
each cap a fresh cluster reads the first ``cap_file_mib`` of the large file cold through the
mount, beside the source read directly with one stream and with 16 ranged GETs. The plot is cold
throughput against the cap: where the cache's parallel fetches stop following the parallel
direct read, the cache itself is the bottleneck. The source's bytes are kept in nginx's page
cache (read beforehand, not dropped), so that the source's disk is not what is measured.
"""

from __future__ import annotations

import asyncio

from bench import readers as rd
from bench.config import MiB
from bench.context import Bench
from bench.results import Result
from bench.shaper import shaped

NAME = "caps"
TITLE = "8. Cold read against the source's per-connection cap"
GROUP = "cold read vs per-connection cap"


def run(b: Bench) -> Result:
    s, sh = b.sizes, b.params.shaping
    r = Result(NAME, TITLE)
    limit = s.cap_file_mib * MiB
    r.params = {
        "bytes_read": limit,
        "caps_mb_per_s": list(s.caps_mbps),
        "first_byte_ms": sh.conn_latency * 1000,
        "aggregate_mb_per_s": sh.conn_aggregate / 1e6,
        "parallel_streams": b.streams,
        "repetitions": b.reps,
    }
    systems = ["conn-direct", "conn-parallel", "fc-fuse-conn"]
    for rep in range(b.reps):
        for cap in s.caps_mbps:
            b.log(f" {NAME}: repetition {rep + 1}/{b.reps}, {cap} MB/s per connection")
            log = b.work / f"shaper-cap-{cap}-{rep}.log"
            with shaped(b.raw_http, sh.conn_aggregate, sh.conn_latency, log, cap * 1e6) as url:
                src = url + "large/big.bin"
                with b.cluster(
                    f"{NAME}-{cap}-{rep}",
                    mem_quota_mib=s.cap_file_mib + 64,
                    sources=[f"conn={url}"],
                ) as c:
                    assert c.mountpoint is not None
                    for system in b.order(systems, rep):
                        # The source's speed is the shaper's, not its disk's: the bytes read
                        # are in the page cache (a fresh mount has nothing of them cached).
                        rd.read_file(b.data.root / "large" / "big.bin", limit)
                        if system == "conn-direct":
                            ranges = [(0, limit)]
                            n, t = asyncio.run(rd.atimed(_ranges(src, ranges, 1)))
                        elif system == "conn-parallel":
                            ranges = rd.ranges(limit, b.streams)
                            n, t = asyncio.run(rd.atimed(_ranges(src, ranges, b.streams)))
                        else:
                            path = c.mountpoint / "conn" / "large" / "big.bin"
                            n, t = rd.timed(lambda p=path: rd.read_file(p, limit))
                        rd.expect(n, limit, f"{NAME} {system} at {cap} MB/s")
                        case = f"{cap} MB/s per connection: cold"
                        vs = f"{cap} MB/s per connection: cold" if system.startswith("fc") else None
                        r.add(case, system, "MB/s", n / t / 1e6, x=cap, group=GROUP, vs_case=vs)
    return r


async def _ranges(url: str, ranges: list[tuple[int, int]], streams: int) -> int:
    async with rd.http_session(streams) as s:
        return await rd.gather_bounded(ranges, streams, lambda p: rd.http_get_range(s, url, *p))
