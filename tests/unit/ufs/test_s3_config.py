"""S3 adapter configuration: URIs, options, credentials files; secrets never shown."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fluidcache.common import errors
from fluidcache.ufs.s3 import Credentials, S3Ufs, content_version

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def test_uris_keep_keys_raw() -> None:
    ufs = S3Ufs("s3://bucket/some/prefix/")
    assert ufs.uri("") == "s3://bucket/some/prefix"
    assert ufs.uri("a b/c#d?.txt") == "s3://bucket/some/prefix/a b/c#d?.txt"
    assert ufs.relpath("s3://bucket/some/prefix/a b/c#d?.txt") == "a b/c#d?.txt"
    assert ufs.relpath("s3://bucket/some/prefix") == ""
    for foreign in ("s3://bucket/some/prefixx/a", "s3://other/some/prefix/a", "http://x/y"):
        with pytest.raises(errors.InvalidArgument):
            ufs.relpath(foreign)
    whole = S3Ufs("s3://bucket")
    assert whole.uri("k") == "s3://bucket/k" and whole.relpath("s3://bucket/k") == "k"


@pytest.mark.parametrize("uri", ["s3://", "s3:///prefix", "s3://bad bucket/x", "s3://b/../x"])
def test_bad_uris(uri: str) -> None:
    with pytest.raises((errors.ConfigError, errors.InvalidArgument)):
        S3Ufs(uri)


@pytest.mark.parametrize(
    "option", ["aws_secret_access_key", "secret_key", "aws_session_token", "access_key_id"]
)
def test_secrets_are_refused_as_options(option: str) -> None:
    with pytest.raises(errors.ConfigError, match="credentials_file") as info:
        S3Ufs("s3://bucket/p", {option: SECRET})
    assert SECRET not in str(info.value)


def test_options_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    plain = S3Ufs("s3://bucket/p")
    assert (plain.endpoint_url, plain.region) == (None, "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://generic:9000")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    assert S3Ufs("s3://b").endpoint_url == "http://generic:9000"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3-only:9000")
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    env = S3Ufs("s3://b")
    assert (env.endpoint_url, env.region) == ("http://s3-only:9000", "ap-south-1")
    explicit = S3Ufs("s3://b", {"endpoint_url": "http://minio:9000", "region": "x-1"})
    assert (explicit.endpoint_url, explicit.region) == ("http://minio:9000", "x-1")
    with pytest.raises(errors.ConfigError, match="addressing_style"):
        S3Ufs("s3://b", {"addressing_style": "sideways"})
    with pytest.raises(errors.ConfigError, match="retries"):
        S3Ufs("s3://b", {"retries": "many"})


def test_credentials_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "creds"
    path.write_text(
        f"# comment\n[default]\nAWS_ACCESS_KEY_ID = AKIAEXAMPLE\n"
        f"aws_secret_access_key='{SECRET}'\n\naws_session_token=tok\n"
    )
    ufs = S3Ufs("s3://bucket/p", {"credentials_file": str(path)})
    assert ufs._credentials is not None
    assert ufs._credentials.client_kwargs() == {
        "aws_access_key_id": "AKIAEXAMPLE",
        "aws_secret_access_key": SECRET,
        "aws_session_token": "tok",
    }
    shown = repr(ufs) + repr(vars(ufs)) + repr(ufs._credentials) + caplog.text
    assert SECRET not in shown and "AKIAEXAMPLE" not in shown


def test_bad_credentials_files(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="cannot read"):
        Credentials.from_file(str(tmp_path / "missing"))
    partial = tmp_path / "partial"
    partial.write_text("aws_access_key_id=AKIA\n")
    with pytest.raises(errors.ConfigError, match="needs aws_access_key_id and"):
        Credentials.from_file(str(partial))
    junk = tmp_path / "junk"
    junk.write_text(f"aws_access_key_id=AKIA\n{SECRET}\n")
    with pytest.raises(errors.ConfigError, match="line 2") as info:
        Credentials.from_file(str(junk))
    assert SECRET not in str(info.value)


def test_content_versions_only_from_full_object_sha256() -> None:
    import base64
    import hashlib

    raw = hashlib.sha256(b"x").digest()
    b64 = base64.b64encode(raw).decode()
    assert content_version('"e"', b64) == f'sha256:{raw.hex()} "e"'
    assert content_version('"e"', b64, "FULL_OBJECT") == f'sha256:{raw.hex()} "e"'
    assert content_version('"e-2"', b64) == '"e-2"'  # multipart: a checksum of checksums
    assert content_version('"e"', b64 + "-2") == '"e"'
    assert content_version('"e"', b64, "COMPOSITE") == '"e"'
    assert content_version('"e"', "not base64!") == '"e"'
    assert content_version('"e"', base64.b64encode(b"short").decode()) == '"e"'
    assert content_version('"e"') == '"e"'
