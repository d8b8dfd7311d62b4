"""Every message that crosses the wire, as typed dataclasses, and the routes that carry them.

Control messages travel as msgpack bodies (``application/x-msgpack``); block data travels as raw
bytes. Master, workers and clients all import this module and nothing else to talk to each other.
"""

from __future__ import annotations

import dataclasses
import math
import time
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

import msgpack

from fluidcache.common.blockid import block_id
from fluidcache.common.config import MAX_BLOCK_SIZE

MSGPACK = "application/x-msgpack"
JSON = "application/json"  # only the status page's data; everything else is msgpack
API = "/v1"

# Master routes.
NS_STAT = f"{API}/ns/stat"
NS_LOOKUP = f"{API}/ns/lookup"
NS_LIST = f"{API}/ns/list"
NS_SEEN = f"{API}/ns/seen"
BLOCK_LOCATIONS = f"{API}/blocks/locations"
WORKERS = f"{API}/workers"
WORKER_REGISTER = f"{API}/workers/register"
WORKER_HEARTBEAT = f"{API}/workers/heartbeat"
REPORT = f"{API}/report"
HEALTH = f"{API}/health"

# Worker routes.
BLOCK = API + "/blocks/{block_id}"
BLOCK_CACHE = API + "/blocks/{block_id}/cache"
WORKER_STATS = f"{API}/stats"
METRICS = "/metrics"
BLOCKS_LOCAL = f"{API}/blocks-local"
BLOCKS_CACHE = f"{API}/blocks-cache"
BLOCKS_TOUCH = f"{API}/blocks-touch"
FILE_OPEN = f"{API}/files/open"
PEER_HEADER = "X-Fluidcache-Peer"  # set by a worker fetching from another worker
AHEAD_PARAM = "ahead"  # =1 on a block request: a read-ahead, served after readers' demand reads
READER_HEADER = "X-Fluidcache-Node"  # set by a client: the node it reads from (hit accounting)
MAX_TOUCHES = 1024  # blocks in one TouchRequest
MAX_OPENS = 64  # files in one OpenFilesRequest
MAX_CACHES = 64  # blocks in one CacheBlocksRequest

ROOT_INO = 1
MAX_NAME_BYTES = 255  # POSIX NAME_MAX; keeps dentry keys far below LMDB's 511-byte limit


def valid_name(name: str) -> bool:
    """Whether ``name`` can be one entry of a directory: not empty, ``.`` or ``..``, no slash
    or NUL, at most :data:`MAX_NAME_BYTES` bytes."""
    return (
        bool(name)
        and name not in (".", "..")
        and "/" not in name
        and "\0" not in name
        and len(name.encode("utf-8", "surrogateescape")) <= MAX_NAME_BYTES
    )


def check_name(name: str) -> None:
    """ValueError (a 400 on the wire) unless :func:`valid_name`."""
    if not valid_name(name):
        raise ValueError(
            f"name {name[:300]!r}: not a file name (empty, '.', '..', a slash, NUL, or over "
            f"{MAX_NAME_BYTES} bytes)"
        )


T = TypeVar("T")


# Bounds on what a peer may send: every integer fits a signed 64-bit field (LMDB keys, struct
# packing, sizes), strings and byte strings stay short, and nesting stays shallow.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
MAX_STR = 64 * 1024
MAX_DEPTH = 32


class Message:
    """Mixin: msgpack encoding of a dataclass, nested messages included.

    Each class gets an encoder and two decoders built once from its field types (reflection per
    object made listing pages slow), and decoding checks every field's type. A message from the
    wire (:meth:`decode`) is strict, in one pass: an unknown field, an integer outside 64 bits
    (booleans are not integers), a string over :data:`MAX_STR` characters or nesting deeper
    than :data:`MAX_DEPTH` raises ValueError or TypeError, which servers answer with a 400.
    :meth:`from_wire` keeps ignoring unknown fields, for records an older version stored.
    """

    def to_wire(self) -> dict[str, Any]:
        return _codec(type(self))[0](self)  # type: ignore[no-any-return]

    def encode(self) -> bytes:
        return msgpack.packb(self.to_wire())  # type: ignore[no-any-return]

    @classmethod
    def from_wire(cls: type[T], data: Any) -> T:
        return _codec(cls)[1](data)  # type: ignore[no-any-return]

    @classmethod
    def decode(cls: type[T], body: bytes) -> T:
        data = msgpack.unpackb(body, max_str_len=MAX_STR, max_bin_len=MAX_STR)
        _check_shape(data)
        return _codec(cls)[2](data)  # type: ignore[no-any-return]


def _check_shape(data: Any, depth: int = 0) -> None:
    """ValueError for nesting deeper than MAX_DEPTH or map keys that are not strings.

    Only maps and lists (all msgpack makes) are visited: a call per scalar made this a third
    of decoding a listing page."""
    if type(data) is dict:
        for key, value in data.items():
            if type(key) is not str:
                raise TypeError(f"map key {key!r}: expected a string")
            if depth >= MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
            if type(value) is dict or type(value) is list:
                _check_shape(value, depth + 1)
    elif type(data) is list:
        if data and depth >= MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
        for value in data:
            if type(value) is dict or type(value) is list:
                _check_shape(value, depth + 1)


Convert = Callable[[Any], Any]


_CODECS: dict[type, tuple[Convert, Convert, Convert]] = {}


def _codec(cls: type) -> tuple[Convert, Convert, Convert]:
    """(encode, decode, strict decode) of a message class, planned once from its resolved field
    types. The strict one refuses an unknown field, in nested messages too."""
    codec = _CODECS.get(cls)
    if codec is None:
        codec = _CODECS[cls] = _plan(cls)
    return codec


def _plan(cls: type) -> tuple[Convert, Convert, Convert]:
    hints = get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    encoders = [(name, _encoder(hints[name])) for name in fields]

    def encode(obj: Any) -> dict[str, Any]:
        return {name: enc(getattr(obj, name)) for name, enc in encoders}

    def decoding(strict: bool) -> Convert:
        decoders = {name: _decoder(hints[name], strict) for name in fields}

        def decode(data: Any) -> Any:
            if not isinstance(data, Mapping):
                raise TypeError(f"{cls.__name__}: expected a map, got {type(data).__name__}")
            values = {}
            for name, value in data.items():
                dec = decoders.get(name)
                if dec is not None:
                    values[name] = dec(value)
                elif strict:
                    raise ValueError(f"{cls.__name__}: unknown field {name!r}")
            return cls(**values)

        return decode

    return encode, decoding(strict=False), decoding(strict=True)


def _identity(value: Any) -> Any:
    return value


def _encoder(tp: Any) -> Convert:
    origin = get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, Message):
        return lambda v: v.to_wire()
    if origin is list:
        item = _encoder(get_args(tp)[0])
        return _identity if item is _identity else (lambda v: [item(x) for x in v])
    if origin is dict:
        value = _encoder(get_args(tp)[1])
        return _identity if value is _identity else (lambda v: {k: value(x) for k, x in v.items()})
    if origin in (types.UnionType, typing.Union):
        inner = _encoder(next(a for a in get_args(tp) if a is not type(None)))
        return _identity if inner is _identity else (lambda v: None if v is None else inner(v))
    return _identity


def _decoder(tp: Any, strict: bool) -> Convert:
    """The check and conversion of one field's value; ``strict``: nested messages refuse
    unknown fields (a message from the wire), else they ignore them (a stored record)."""
    origin = get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, Message):
        return (lambda v: _codec(tp)[2](v)) if strict else tp.from_wire
    if origin is list:
        item = _decoder(get_args(tp)[0], strict)

        def as_list(v: Any) -> Any:
            if not isinstance(v, list):
                raise TypeError(f"expected a list, got {type(v).__name__}")
            return [item(x) for x in v]

        return as_list
    if origin is dict:
        value = _decoder(get_args(tp)[1], strict)

        def as_dict(v: Any) -> Any:
            if not isinstance(v, Mapping):
                raise TypeError(f"expected a map, got {type(v).__name__}")
            return {k: value(x) for k, x in v.items()}

        return as_dict
    if origin in (types.UnionType, typing.Union):
        inner = _decoder(next(a for a in get_args(tp) if a is not type(None)), strict)
        return lambda v: None if v is None else inner(v)
    if tp is float:

        def as_float(v: Any) -> float:
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise TypeError(f"expected float, got {type(v).__name__}")
            if not math.isfinite(v):
                raise ValueError(f"{v} is not a finite number")
            return float(v)

        return as_float
    if tp is int:

        def as_int(v: Any) -> int:
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"expected int, got {type(v).__name__}")
            if not INT_MIN <= v <= INT_MAX:
                raise ValueError(f"integer {v} does not fit in 64 bits")
            return v

        return as_int
    if tp in (str, bool):

        def checked(v: Any) -> Any:
            if not isinstance(v, tp):
                raise TypeError(f"expected {tp.__name__}, got {type(v).__name__}")
            return v

        return checked
    return _identity


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorReply(Message):
    """Body of every non-2xx answer."""

    code: str
    message: str


# ---- namespace -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class FileInfo(Message):
    """One inode of the namespace, as the master knows it."""

    ino: int
    parent: int
    name: str
    path: str
    is_dir: bool
    size: int = 0
    mtime: float = 0.0
    uri: str = ""
    version: str = ""
    block_size: int = 0

    @property
    def block_count(self) -> int:
        if self.is_dir or self.size == 0:
            return 0
        return (self.size + self.block_size - 1) // self.block_size

    def block(self, index: int) -> BlockRef:
        """The reference of block ``index`` of this file."""
        return BlockRef(self.uri, self.version, index, self.block_size, self.size)


@dataclasses.dataclass(frozen=True, slots=True)
class StatRequest(Message):
    """Stat by path (``/a/b``) or, when ``ino`` is set, by inode. ``validate``: the file is
    being opened, so its version is checked at the source first if it was listed without one
    (or checked longer ago than the dataset's TTL); NotFound if the source no longer has it.
    ``recheck``: checked whatever the TTL (a read found the source changed)."""

    path: str = "/"
    ino: int = 0
    validate: bool = False
    recheck: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Seen(Message):
    """A file (master inode ``ino``) as its source described it when a worker opened it."""

    ino: int
    size: int
    mtime: float
    version: str


@dataclasses.dataclass(frozen=True, slots=True)
class SeenRequest(Message):
    """Versions clients learnt at open through a worker (``OpenRequest``), told to the master
    in batches: it records them as if it had checked them itself, so later opens (and other
    clients) need no source request within the dataset's TTL."""

    files: list[Seen]


@dataclasses.dataclass(frozen=True, slots=True)
class SeenReply(Message):
    recorded: int


@dataclasses.dataclass(frozen=True, slots=True)
class LookupRequest(Message):
    parent: int
    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class ListRequest(Message):
    """One page of a directory, by path or inode; ``cursor`` is the last name already seen."""

    path: str = "/"
    ino: int = 0
    cursor: str = ""
    limit: int = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class ListReply(Message):
    entries: list[FileInfo]
    cursor: str = ""  # empty: no more pages
    final: bool = False
    """The versions given are final: their source is never checked again (``--ttl 0``), so
    opening one of these files needs no check by the master."""


# ---- blocks ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class BlockRef(Message):
    """Everything a worker needs to find a block at the source; the id is derived, not sent.

    For a file whose version is a content digest the id ignores ``uri`` (see
    :mod:`fluidcache.common.blockid`): any URI with that content may be read to fetch it.
    """

    uri: str
    version: str
    index: int
    block_size: int
    file_size: int

    @property
    def id(self) -> str:
        return block_id(self.uri, self.version, self.index, self.block_size)

    @property
    def offset(self) -> int:
        return self.index * self.block_size

    @property
    def length(self) -> int:
        return max(0, min(self.block_size, self.file_size - self.offset))

    def to_query(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.to_wire().items()}

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> BlockRef:
        try:
            return cls(
                uri=query["uri"],
                version=query["version"],
                index=int(query["index"]),
                block_size=int(query["block_size"]),
                file_size=int(query["file_size"]),
            )
        except (KeyError, ValueError) as e:
            raise ValueError(f"bad block reference: {e}") from None


@dataclasses.dataclass(frozen=True, slots=True)
class LocationsRequest(Message):
    block_ids: list[str]


@dataclasses.dataclass(frozen=True, slots=True)
class LocationsReply(Message):
    """Block id → ids of the workers that hold it (absent ids are held by none)."""

    locations: dict[str, list[str]]


# ---- workers -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class TierUsage(Message):
    medium: str
    capacity: int
    used: int
    blocks: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class ReadBytes(Message):
    """Bytes readers got, by where they came from (Fluid's and Alluxio's hit accounting).

    ``local``: from a cache on the reader's node (short-circuit, or a worker on that node);
    ``remote``: from the cache of a worker on another node; ``source``: read from the source
    for a reader (misses). A worker's counts are cumulative since it started.
    """

    local: int = 0
    remote: int = 0
    source: int = 0

    def __add__(self, other: ReadBytes) -> ReadBytes:
        return ReadBytes(
            self.local + other.local, self.remote + other.remote, self.source + other.source
        )

    @property
    def total(self) -> int:
        return self.local + self.remote + self.source

    def ratio(self, part: int) -> float:
        """``part`` as a fraction of every byte read, 0 when nothing was read."""
        return round(part / self.total, 4) if self.total else 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerInfo(Message):
    worker_id: str
    address: str  # base URL, e.g. http://127.0.0.1:7001
    node: str = ""
    tiers: list[TierUsage] = dataclasses.field(default_factory=list)
    last_heartbeat: float = 0.0
    state: str = "live"  # live | lost
    reads: ReadBytes = dataclasses.field(default_factory=ReadBytes)


@dataclasses.dataclass(frozen=True, slots=True)
class RegisterRequest(Message):
    """A worker announces itself with every block it holds."""

    worker: WorkerInfo
    blocks: list[str]


@dataclasses.dataclass(frozen=True, slots=True)
class MountInfo(Message):
    """One source of a dataset: its directory name, root URI and non-secret adapter options."""

    dataset: str
    name: str
    uri: str
    options: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class RegisterReply(Message):
    heartbeat_interval: float
    mounts: list[MountInfo] = dataclasses.field(default_factory=list)  # sources a worker may read


@dataclasses.dataclass(frozen=True, slots=True)
class HeartbeatRequest(Message):
    """Blocks added and removed since the last heartbeat that succeeded, plus tier usage."""

    worker_id: str
    added: list[str] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    tiers: list[TierUsage] = dataclasses.field(default_factory=list)
    reads: ReadBytes | None = None  # cumulative; None from a worker that does not count them


@dataclasses.dataclass(frozen=True, slots=True)
class HeartbeatReply(Message):
    reregister: bool = False  # the master does not know this worker: register again


@dataclasses.dataclass(frozen=True, slots=True)
class WorkersReply(Message):
    workers: list[WorkerInfo]


@dataclasses.dataclass(frozen=True, slots=True)
class LocalBlocksRequest(Message):
    """Short-circuit: a client on the worker's node asks where block files are."""

    block_ids: list[str]


@dataclasses.dataclass(frozen=True, slots=True)
class CacheBlocksRequest(Message):
    """Fetch blocks into the worker's store (POST, ``BLOCKS_CACHE``): a same-node client's
    cold reads of files of one block listed with their versions (``ahead`` False), or its opens
    of them ahead of its readers, in one call (at most :data:`MAX_CACHES`). Answered with a
    :class:`LocalBlocksReply`: the files of those kept, the error of each that failed."""

    blocks: list[BlockRef]
    ahead: bool = True  # their source reads wait behind readers' demand reads

    def __post_init__(self) -> None:
        if not 0 < len(self.blocks) <= MAX_CACHES:
            raise ValueError(f"blocks: {len(self.blocks)} blocks, 1 to {MAX_CACHES} a call")


@dataclasses.dataclass(frozen=True, slots=True)
class OpenRequest(Message):
    """Open a file listed without its version (one of an :class:`OpenFilesRequest`): the
    worker reads its first block from the source, whose answer tells the version as well (no
    separate ``stat``), and keeps that block under the id this version gives it."""

    uri: str
    block_size: int
    size_hint: int = -1  # the size the file was listed with (-1: unknown): the buffer to read into
    ahead: bool = False  # a client's prefetch, not a reader's open: it waits behind those

    def __post_init__(self) -> None:
        if not 0 < self.block_size <= MAX_BLOCK_SIZE:
            raise ValueError(f"block_size: {self.block_size} is not in 1..{MAX_BLOCK_SIZE}")


@dataclasses.dataclass(frozen=True, slots=True)
class OpenReply(Message):
    """The file as its source has it now. ``path``: its first block's file on the worker
    ("" when it could not be kept); ``fetched``: this open read that block from the source
    (the reader's first bytes count as that miss, not as a hit)."""

    size: int
    mtime: float
    version: str
    path: str = ""
    fetched: bool = False
    stamp: list[int] = dataclasses.field(default_factory=list)  # as in LocalBlocksReply
    error: list[str] = dataclasses.field(default_factory=list)  # [code, message]: not opened


@dataclasses.dataclass(frozen=True, slots=True)
class OpenFilesRequest(Message):
    """Open files listed without their versions (POST to a worker, ``FILE_OPEN``): the opens
    a client has waiting, in one call (at most :data:`MAX_OPENS`)."""

    files: list[OpenRequest]

    def __post_init__(self) -> None:
        if not 0 < len(self.files) <= MAX_OPENS:
            raise ValueError(f"files: {len(self.files)} files, 1 to {MAX_OPENS} a call")


@dataclasses.dataclass(frozen=True, slots=True)
class OpenFilesReply(Message):
    """One :class:`OpenReply` per file asked, in order (each may carry its own error)."""

    files: list[OpenReply]


@dataclasses.dataclass(frozen=True, slots=True)
class LocalBlocksReply(Message):
    """Block id -> path of its verified file, for the blocks held (others are absent)."""

    paths: dict[str, str]
    # Blocks this answer fetched for the reader (the read of them counted as a miss already).
    fetched: list[str] = dataclasses.field(default_factory=list)
    # Block id -> (inode, size, mtime ns) of its file when the worker last checked its bytes:
    # a reader that finds the file so need not hash it again (any other stat: it hashes).
    stamps: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    # Block id -> [code, message] of a block a CacheBlocksRequest could not fetch.
    errors: dict[str, list[str]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class TouchRequest(Message):
    """Short-circuit reads a same-node client made since its last touch: block id -> bytes.

    The worker counts them as local hits and marks the blocks as just used (LRU), as if it had
    served them; sent batched, never per read, at most :data:`MAX_TOUCHES` blocks a call. A
    negative count is refused; the worker caps each count at the block's size.
    """

    reads: dict[str, int]

    def __post_init__(self) -> None:
        if len(self.reads) > MAX_TOUCHES:
            raise ValueError(f"reads: {len(self.reads)} blocks, at most {MAX_TOUCHES} a call")
        for bid, size in self.reads.items():
            if size < 0:
                raise ValueError(f"reads[{bid[:80]!r}]: negative byte count {size}")


@dataclasses.dataclass(frozen=True, slots=True)
class TouchReply(Message):
    held: int = 0  # how many of the blocks the worker still holds


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerStats(Message):
    """A worker's own counters (a subset of its Prometheus metrics)."""

    worker_id: str
    tiers: list[TierUsage]
    hits: int = 0
    misses: int = 0
    source_fetches: int = 0
    source_bytes: int = 0
    served_bytes: int = 0


# ---- statistics --------------------------------------------------------------------------------


def _fluid_states(s: DatasetReport | Report) -> dict[str, Any]:
    """The figures a dataset and the whole cluster share, under Fluid's Dataset status keys."""
    return {
        "ufsTotal": s.ufs_total_bytes,
        "fileNum": s.file_count,
        "cached": s.cached_bytes,
        "cacheCapacity": s.cache_capacity,
        "cachedPercentage": s.cached_percent,
        "cacheHitRatio": s.cache_hit_ratio,
        "localHitRatio": s.local_hit_ratio,
        "remoteHitRatio": s.remote_hit_ratio,
    }


@dataclasses.dataclass(frozen=True, slots=True)
class CapacityShortfall(Message):
    """A dataset larger than the cluster's cache: how much fits and how to add room."""

    ufs_total_bytes: int
    cache_capacity: int
    missing_bytes: int  # ufs total - capacity
    fits_percent: float  # the part of the dataset the cache can hold, 0-100
    live_workers: int
    per_worker_bytes: int  # quota to add to each live worker for the whole dataset to fit
    advice: str  # one human line naming the flags that add room


@dataclasses.dataclass(frozen=True, slots=True)
class DatasetReport(Message):
    """One dataset as Fluid's Dataset status shows it (``ufsTotal``, ``cacheStates``).

    The workers' cache is shared by the cluster's datasets: ``cached_bytes`` and the hit ratios
    are the cluster's (exact for the usual master with one dataset).
    """

    name: str
    ufs_total_bytes: int
    file_count: int
    cached_bytes: int
    cache_capacity: int
    cached_percent: float
    cache_hit_ratio: float = 0.0
    local_hit_ratio: float = 0.0
    remote_hit_ratio: float = 0.0
    shortfall: CapacityShortfall | None = None
    shared_bytes: int = 0  # content also under another path, cached once (content-addressed)
    snapshots: dict[str, str] = dataclasses.field(default_factory=dict)  # mount -> hf://...@COMMIT

    def fluid(self) -> dict[str, Any]:
        """Fluid's key names and units (bytes, percent, ratios in 0-1), for scripts."""
        s = self.shortfall
        return {
            "name": self.name,
            **_fluid_states(self),
            "sharedBytes": self.shared_bytes,
            "snapshots": self.snapshots,
            "capacityShortfall": None
            if s is None
            else {
                "missing": s.missing_bytes,
                "fitsPercentage": s.fits_percent,
                "liveWorkers": s.live_workers,
                "perWorker": s.per_worker_bytes,
                "advice": s.advice,
            },
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Report(Message):
    """Dataset statistics as Fluid shows them: totals, each dataset, each live worker's tiers."""

    ufs_total_bytes: int
    file_count: int
    cached_bytes: int
    cache_capacity: int
    cached_percent: float
    workers: list[WorkerInfo]
    datasets: list[DatasetReport] = dataclasses.field(default_factory=list)
    reads: ReadBytes = dataclasses.field(default_factory=ReadBytes)  # over live workers
    cache_hit_ratio: float = 0.0
    local_hit_ratio: float = 0.0
    remote_hit_ratio: float = 0.0
    lost_workers: int = 0
    shared_bytes: int = 0  # over every dataset: bytes not cached twice thanks to shared content

    def fluid(self) -> dict[str, Any]:
        """The whole report under Fluid's key names: what ``fluidcache report --json`` prints."""
        return {
            "datasets": [d.fluid() for d in self.datasets],
            "cluster": {
                **_fluid_states(self),
                "sharedBytes": self.shared_bytes,
                "bytesRead": self.reads.to_wire(),
                "liveWorkers": len(self.workers),
                "lostWorkers": self.lost_workers,
            },
            "workers": [
                {
                    "id": w.worker_id,
                    "node": w.node,
                    "address": w.address,
                    "bytesRead": w.reads.to_wire(),
                    "tiers": [t.to_wire() for t in w.tiers],
                }
                for w in self.workers
            ],
        }


# ---- master: metadata sync, backup, per-dataset statistics --------------------------------------

NS_LOAD_METADATA = f"{API}/ns/load_metadata"
NS_LOAD_STATUS = f"{API}/ns/load_metadata/status"
BACKUP = f"{API}/backup"
DATASET_REPORT = f"{API}/report/dataset"


@dataclasses.dataclass(frozen=True, slots=True)
class LoadMetadataRequest(Message):
    """Sync the subtree at ``path`` from its sources into the namespace, eagerly.

    ``force`` re-lists directories that are still fresh; with ``wait`` false the reply comes at
    once (state ``running``) and :data:`NS_LOAD_STATUS` tells the progress.
    """

    path: str = "/"
    force: bool = False
    wait: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class LoadStatusRequest(Message):
    job_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class LoadMetadataReply(Message):
    """Progress of one metadata load: counts so far, final once ``state`` is done or failed."""

    job_id: str
    path: str
    state: str  # running | done | failed
    dirs_listed: int = 0
    files: int = 0  # files seen in the listed directories
    dirs: int = 0  # directories seen in the listed directories
    bytes: int = 0  # total size of the files seen
    seconds: float = 0.0
    error: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class BackupRequest(Message):
    """Write a metadata backup named ``name`` (a plain file name) in the master's backup dir, or
    in ``directory`` (absolute, under one of the master's ``--backup-root`` directories)."""

    name: str = ""
    directory: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class BackupReply(Message):
    path: str
    size: int
    inodes: int
    checksum: str


@dataclasses.dataclass(frozen=True, slots=True)
class DatasetRequest(Message):
    dataset: str


# ---- master: jobs (warm-ups, backups), free ------------------------------------------------------

JOB_SUBMIT = f"{API}/jobs/submit"
JOB_LIST = f"{API}/jobs/list"
JOB_STATUS = f"{API}/jobs/status"
JOB_CANCEL = f"{API}/jobs/cancel"
FREE = f"{API}/free"

# The status page: an HTML shell (no data, served without the token) and its JSON (with it).
STATUS_PAGE = "/"
STATUS_STATIC = "/static/"  # + file name; the files are package data of fluidcache.master
STATUS = f"{API}/status"

# Worker routes for the operations layer.
BLOCKS_FREE = f"{API}/blocks/free"

JOB_LOAD = "load"  # Fluid's DataLoad: cache target paths on N workers each
JOB_BACKUP = "backup"  # Fluid's DataBackup: a metadata backup file on the master
JOB_KINDS = (JOB_LOAD, JOB_BACKUP)

PENDING, EXECUTING, COMPLETE, FAILED = "Pending", "Executing", "Complete", "Failed"
JOB_PHASES = (PENDING, EXECUTING, COMPLETE, FAILED)
REPLICAS_ALL = -1  # ``--replicas all``: every live worker holds every block (peer fan-out)


@dataclasses.dataclass(frozen=True, slots=True)
class JobRequest(Message):
    """Submit a job. Paths are relative to ``dataset`` (``/`` is its root).

    ``replicas`` is the number of distinct workers that hold each block (:data:`REPLICAS_ALL`
    for every live worker); ``metadata`` lists the targets from the sources first; ``pin``
    keeps the loaded blocks from eviction until freed; ``schedule`` is a cron expression (the
    job then runs at each of its times); ``after`` is a job that must complete first.
    """

    kind: str = JOB_LOAD
    dataset: str = "default"
    paths: list[str] = dataclasses.field(default_factory=lambda: ["/"])
    replicas: int = 1
    metadata: bool = False
    pin: bool = False
    schedule: str = ""
    after: str = ""
    name: str = ""  # backups: the file name in the master's backup dir
    directory: str = ""  # backups: write there instead (absolute, under a --backup-root)


@dataclasses.dataclass(frozen=True, slots=True)
class TargetProgress(Message):
    """Progress of one target path of a load: exact byte and file counts."""

    path: str
    files_total: int = 0
    bytes_total: int = 0
    files_done: int = 0
    bytes_done: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class JobInfo(Message):
    """One job as the master keeps it (times are Unix seconds, 0 = not yet).

    A block counts as done once it is held by the job's number of replicas; a file once all its
    blocks are. ``rate`` is bytes done per second of the current run; ``eta`` its seconds to go
    (-1 unknown). A scheduled job goes back to Pending after each run, with ``next_run`` set.
    """

    job_id: str
    kind: str
    dataset: str
    paths: list[str]
    phase: str
    replicas: int = 1
    metadata: bool = False
    pin: bool = False
    schedule: str = ""
    after: str = ""
    name: str = ""
    directory: str = ""
    created: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    files_total: int = 0
    bytes_total: int = 0
    files_done: int = 0
    bytes_done: int = 0
    source_bytes: int = 0  # bytes the workers read from the sources for this job
    rate: float = 0.0
    eta: float = -1.0
    targets: list[TargetProgress] = dataclasses.field(default_factory=list)
    runs: int = 0
    next_run: float = 0.0
    last_success: float = 0.0
    error: str = ""
    result: str = ""  # backups: the file written

    @property
    def duration(self) -> float:
        if not self.started:
            return 0.0
        return max(0.0, (self.finished or time.time()) - self.started)


@dataclasses.dataclass(frozen=True, slots=True)
class JobIdRequest(Message):
    job_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class JobsRequest(Message):
    """List jobs, newest first; ``phase`` filters (empty: every phase)."""

    phase: str = ""
    limit: int = 100


@dataclasses.dataclass(frozen=True, slots=True)
class JobsReply(Message):
    jobs: list[JobInfo]


@dataclasses.dataclass(frozen=True, slots=True)
class Status(Message):
    """What the status page shows: the master's report and its jobs, newest first.

    Served as JSON (``to_wire``) at :data:`STATUS` for the browser; ``time`` is the master's
    Unix time, against which the page shows the age of heartbeats and jobs.
    """

    report: Report
    jobs: list[JobInfo]
    time: float


@dataclasses.dataclass(frozen=True, slots=True)
class FreeRequest(Message):
    """Evict the blocks of ``paths`` (dataset-relative) from every worker; pins are dropped."""

    dataset: str = "default"
    paths: list[str] = dataclasses.field(default_factory=lambda: ["/"])


@dataclasses.dataclass(frozen=True, slots=True)
class FreeReply(Message):
    files: int
    blocks: int  # block copies removed, over all workers
    bytes: int  # bytes removed, over all workers


@dataclasses.dataclass(frozen=True, slots=True)
class BlocksFreeRequest(Message):
    """Ask a worker to remove these blocks (held or not; pinned ones too)."""

    block_ids: list[str]


@dataclasses.dataclass(frozen=True, slots=True)
class BlocksFreeReply(Message):
    blocks: int
    bytes: int
