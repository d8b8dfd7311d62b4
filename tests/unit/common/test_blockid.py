"""Block ids: from URI and version, or from the content digest when the version is one."""

from __future__ import annotations

from fluidcache.common.blockid import block_id, content_digest
from fluidcache.common.protocol import BlockRef

SHA = "sha256:" + "ab" * 32
BLOB = "git-blob:" + "cd" * 20


def test_ids_of_files_without_a_digest_are_unchanged() -> None:
    # The key of every existing id: URI, version, block size, index (ids held by workers today).
    import xxhash

    key = b's3://b/k\x00"etag"\x004096\x003'
    assert block_id("s3://b/k", '"etag"', 3, 4096) == xxhash.xxh3_128_hexdigest(key)
    assert block_id("s3://b/k", "v1", 0, 4096) != block_id("s3://b/other", "v1", 0, 4096)


def test_content_digests_share_ids_across_uris() -> None:
    a = block_id("hf://org/model@" + "1" * 40 + "/w.safetensors", SHA, 2, 1 << 20)
    b = block_id("hf://datasets/x/y@main/copy/w.safetensors", SHA, 2, 1 << 20)
    assert a == b
    assert block_id("hf://o/r@c/f", BLOB, 0, 1 << 20) == block_id("hf://o/s@d/g", BLOB, 0, 1 << 20)
    assert a != block_id("hf://o/r@c/w", SHA, 3, 1 << 20)  # index
    assert a != block_id("hf://o/r@c/w", SHA, 2, 1 << 21)  # block size
    assert a != block_id("hf://o/r@c/w", "sha256:" + "ef" * 32, 2, 1 << 20)  # content


def test_what_counts_as_a_digest() -> None:
    assert content_digest(SHA) == SHA and content_digest(BLOB) == BLOB
    for version in ('"sha256:abc"', "sha256:short", "123-456", "", 'W/"x"'):
        assert content_digest(version) is None


def test_block_ref_uses_the_digest() -> None:
    one = BlockRef("hf://o/r@a/f", SHA, 1, 1024, 5000)
    two = BlockRef("hf://o/q@b/g", SHA, 1, 1024, 5000)
    assert one.id == two.id


def test_a_digest_with_the_sources_own_version_after_it() -> None:
    digest = "sha256:" + "ab" * 32
    assert content_digest(f'{digest} "etag1"') == digest
    assert block_id("s3://a/x", f'{digest} "etag1"', 0, 1024) == block_id(
        "s3://b/y", f'{digest} "etag2"', 0, 1024
    )
    assert content_digest('"etag1"') is None
