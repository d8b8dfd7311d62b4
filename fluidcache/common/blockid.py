"""Block identity: a hash of source URI, source version, block size and block index, or of the
file's content digest, block size and block index when the source gives a digest.

When the source changes, its version changes and so do the ids: a stale block can never be
served for the new version. A version that *is* a content digest (``sha256:HEX``, the Hub's LFS
oid; ``git-blob:HEX``, a git blob id) names the bytes themselves, so the URI is left out: the same
content under two revisions, repositories or datasets has the same block ids and is cached once.
Every other version (ETags, size+mtime) keeps the URI in the key, as before. A digest version may
carry the source's own version after a space (``sha256:HEX ETAG``, an S3 object with a
full-object SHA-256): only the digest keys the blocks.
"""

import os
from collections.abc import Sequence

import xxhash

DIGEST_PREFIXES = ("sha256:", "git-blob:")
"""Versions with these prefixes are content digests (see :func:`content_digest`)."""


def content_digest(version: str) -> str | None:
    """The content digest ``version`` starts with (``sha256:HEX`` or ``git-blob:HEX``, up to a
    space), else None."""
    digest = version.partition(" ")[0]
    if digest.startswith(DIGEST_PREFIXES) and len(digest.partition(":")[2]) >= 40:
        return digest
    return None


def block_id(uri: str, version: str, index: int, block_size: int) -> str:
    """The 32-hex-digit id of one block of one version of one source file."""
    digest = content_digest(version)
    if digest is not None:
        key = f"content\0{digest}\0{block_size}\0{index}".encode()
    else:
        key = f"{uri}\0{version}\0{block_size}\0{index}".encode()
    return xxhash.xxh3_128_hexdigest(key)


def is_block_id(text: str) -> bool:
    """Whether ``text`` has the shape of a block id (safe to use as a file name)."""
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def checksum(parts: Sequence[bytes | memoryview]) -> str:
    """The checksum a worker records with every block (the suffix of its file name, after the
    id and a dot), over its parts in order: 16 hex digits."""
    h = xxhash.xxh3_64()
    for part in parts:
        h.update(part)
    return h.hexdigest()


def file_checksum(fd: int, size: int, piece: int = 1 << 20) -> str:
    """:func:`checksum` of the first ``size`` bytes of an open file."""
    h = xxhash.xxh3_64()
    offset = 0
    while offset < size:
        data = os.pread(fd, min(piece, size - offset), offset)
        if not data:
            break
        h.update(data)
        offset += len(data)
    return h.hexdigest()
