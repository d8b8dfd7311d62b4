"""Local, PVC and NFS directories: confinement to the root, symlinks, the mount-root map."""

from __future__ import annotations

import os
from contextlib import aclosing
from pathlib import Path

import pytest

from fluidcache.common import errors
from fluidcache.ufs import UnderFileSystem, create_ufs
from fluidcache.ufs.local import LocalUfs, NfsUfs, PvcUfs


async def names(ufs: UnderFileSystem, path: str = "") -> list[str]:
    async with aclosing(ufs.list(path)) as entries:  # type: ignore[type-var]
        return sorted([e.name async for e in entries])


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/ with good and bad symlinks; ``outside/secret`` must never be reachable."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("secret")
    root = tmp_path / "root"
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "e" / "f.txt").write_text("inside")
    (root / "top.txt").write_text("top")
    os.symlink("d/e/f.txt", root / "rel-file")
    os.symlink("d/e", root / "rel-dir")
    os.symlink("../../top.txt", root / "d" / "e" / "up-inside")
    os.symlink(str(root / "top.txt"), root / "abs-inside")
    os.symlink(str(tmp_path / "outside" / "secret"), root / "abs-outside")
    os.symlink("../outside/secret", root / "rel-outside")
    os.symlink("../outside", root / "rel-outside-dir")
    os.symlink("d/../../outside", root / "sneaky")
    os.symlink("nowhere", root / "dangling")
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    os.mkfifo(root / "fifo")
    return root


async def test_relative_symlinks_inside_are_followed(tree: Path) -> None:
    ufs = LocalUfs(f"local://{tree}")
    assert await ufs.read("rel-file", 0, 100) == b"inside"
    assert await ufs.read("rel-dir/f.txt", 0, 100) == b"inside"
    assert await ufs.read("d/e/up-inside", 0, 100) == b"top"
    assert (await ufs.stat("rel-dir")).is_dir
    assert await names(ufs, "rel-dir") == ["f.txt", "up-inside"]


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("abs-inside", "absolute symlink"),
        ("abs-outside", "absolute symlink"),
        ("rel-outside", "outside the mount root"),
        ("rel-outside-dir/secret", "outside the mount root"),
        ("sneaky/secret", "outside the mount root"),
    ],
)
async def test_escaping_symlinks_are_refused(tree: Path, path: str, why: str) -> None:
    ufs = LocalUfs(f"hostpath://{tree}")
    with pytest.raises(errors.PermissionDenied, match=why):
        await ufs.stat(path)
    with pytest.raises(errors.PermissionDenied, match=why):
        await ufs.read(path, 0, 100)


async def test_listing_leaves_out_what_cannot_be_read(tree: Path) -> None:
    ufs = LocalUfs(f"local://{tree}")
    assert await names(ufs) == ["d", "rel-dir", "rel-file", "top.txt"]
    with pytest.raises(errors.PermissionDenied):
        await names(ufs, "rel-outside-dir")


async def test_dangling_loops_fifos_and_dotdot(tree: Path) -> None:
    ufs = LocalUfs(f"local://{tree}")
    with pytest.raises(errors.NotFound):
        await ufs.stat("dangling")
    with pytest.raises(errors.SourceError, match="symbolic links"):
        await ufs.stat("loop-a")
    with pytest.raises(errors.PermissionDenied, match="not a regular file"):
        await ufs.read("fifo", 0, 10)  # never blocks on a pipe
    with pytest.raises(errors.InvalidArgument):
        await ufs.stat("../outside/secret")
    with pytest.raises(errors.NotADirectory):
        await ufs.stat("top.txt/x")


async def test_root_that_is_missing_or_a_file(tmp_path: Path) -> None:
    with pytest.raises(errors.NotFound):
        await LocalUfs(f"local://{tmp_path}/nope").stat("")
    (tmp_path / "f").write_text("x")
    with pytest.raises(errors.NotADirectory):
        await LocalUfs(f"local://{tmp_path}/f").stat("")


def test_local_uris(tmp_path: Path) -> None:
    ufs = LocalUfs(f"local://{tmp_path}/")
    assert ufs.uri("") == f"local://{tmp_path}"
    assert ufs.uri("a b/c#d") == f"local://{tmp_path}/a%20b/c%23d"
    assert ufs.relpath(ufs.uri("a b/c#d")) == "a b/c#d"
    for foreign in (f"file://{tmp_path}/x", f"local://{tmp_path}x/y", "local:///elsewhere"):
        with pytest.raises(errors.InvalidArgument):
            ufs.relpath(foreign)
    with pytest.raises(errors.ConfigError, match="three slashes"):
        LocalUfs("local://host/path")


def test_root_slash(tmp_path: Path) -> None:
    ufs = LocalUfs("local:///")
    assert ufs.uri("etc/hosts") == "local:///etc/hosts"
    assert ufs.relpath("local:///etc/hosts") == "etc/hosts"
    assert ufs.relpath("local:///") == ""


async def test_pvc_maps_to_the_mount_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "claim" / "sub" / "dir").mkdir(parents=True)
    (tmp_path / "claim" / "sub" / "dir" / "x.txt").write_text("pvc data")
    monkeypatch.setenv("FLUIDCACHE_PVC_ROOT", str(tmp_path))
    ufs = create_ufs("pvc://claim/sub")
    assert isinstance(ufs, PvcUfs)
    assert ufs.root == f"{tmp_path}/claim/sub"
    assert await ufs.read("dir/x.txt", 0, 100) == b"pvc data"
    assert ufs.uri("dir/x.txt") == "pvc://claim/sub/dir/x.txt"
    assert ufs.relpath("pvc://claim/sub/dir/x.txt") == "dir/x.txt"
    assert ufs.uri("") == "pvc://claim/sub"
    with pytest.raises(errors.InvalidArgument):
        ufs.relpath("pvc://other/sub/dir/x.txt")
    whole = create_ufs("pvc://claim")
    assert await names(whole) == ["sub"]
    assert whole.relpath(whole.uri("sub/dir")) == "sub/dir"


async def test_pvc_root_option_and_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLUIDCACHE_PVC_ROOT", raising=False)
    assert PvcUfs("pvc://claim/a").root == "/mnt/pvc/claim/a"
    monkeypatch.setenv("FLUIDCACHE_PVC_ROOT", "/somewhere/else")
    (tmp_path / "claim").mkdir()
    ufs = PvcUfs("pvc://claim", {"pvc_root": str(tmp_path)})
    assert (await ufs.stat("")).is_dir
    with pytest.raises(errors.NotFound, match="is the volume mounted"):
        await PvcUfs("pvc://absent").stat("")


async def test_pvc_sub_cannot_leave_the_volume(tmp_path: Path) -> None:
    (tmp_path / "claim").mkdir()
    (tmp_path / "other").mkdir()
    os.symlink("../other", tmp_path / "claim" / "jump")
    os.symlink(str(tmp_path / "other"), tmp_path / "claim" / "abs")
    opts = {"pvc_root": str(tmp_path)}
    for uri in ("pvc://claim/jump", "pvc://claim/abs"):
        with pytest.raises(errors.PermissionDenied):
            await PvcUfs(uri, opts).stat("")
    for bad in ("pvc://claim/../other", "pvc:///nothing", "pvc://../x", "pvc://a/b?x=1"):
        with pytest.raises(errors.ConfigError):
            PvcUfs(bad, opts)
    with pytest.raises(errors.ConfigError, match="absolute"):
        PvcUfs("pvc://claim", {"pvc_root": "relative/path"})


async def test_nfs_maps_server_and_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "10.0.0.5" / "exports" / "data").mkdir(parents=True)
    (tmp_path / "10.0.0.5" / "exports" / "data" / "f").write_text("nfs")
    monkeypatch.setenv("FLUIDCACHE_NFS_ROOT", str(tmp_path))
    ufs = create_ufs("nfs://10.0.0.5/exports/data")
    assert isinstance(ufs, NfsUfs)
    assert await ufs.read("f", 0, 10) == b"nfs"
    assert ufs.uri("f") == "nfs://10.0.0.5/exports/data/f"
    assert ufs.relpath(ufs.uri("f")) == "f"
    monkeypatch.delenv("FLUIDCACHE_NFS_ROOT")
    assert NfsUfs("nfs://srv/export").root == "/mnt/nfs/srv/export"
    assert NfsUfs("nfs://srv/export", {"nfs_root": "/n"}).root == "/n/srv/export"
