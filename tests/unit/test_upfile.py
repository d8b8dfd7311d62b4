"""``up -f``: the samples parse as the cluster reads them; secrets from env or a secrets dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from fluidcache.common import errors
from fluidcache.upfile import credentials, load, secret_env, sources_and_options, worker_tiers

SAMPLES = Path(__file__).resolve().parents[2] / "k8s/samples"


def test_model_cache_sample_gives_two_workers_with_mem_and_ssd() -> None:
    spec = load((SAMPLES / "model-cache.yaml").read_text())
    assert spec.runtime.replicas == 2
    tiers = worker_tiers(spec.runtime, 1, Path("/dev/shm/x"), Path("/d"))
    assert tiers == [
        f"MEM:/dev/shm/x/mem-0/worker-1:{256 * 2**20}:0.95:0.7",
        f"SSD:/d/ssd-1/worker-1:{2**30}:0.9:0.7",
    ]
    assert sources_and_options(spec, Path("/c")) == (["models=local:///mnt/models"], [])


def test_s3_secrets_come_from_env_or_a_secrets_dir(tmp_path: Path) -> None:
    spec = load((SAMPLES / "s3-dataset.yaml").read_text())
    env = {
        secret_env("s3-credentials", "access-key-id"): "AK",
        secret_env("s3-credentials", "secret-access-key"): "SK",
    }
    assert env.keys() == {
        "FLUIDCACHE_SECRET_S3_CREDENTIALS_ACCESS_KEY_ID",
        "FLUIDCACHE_SECRET_S3_CREDENTIALS_SECRET_ACCESS_KEY",
    }
    assert credentials(spec, None, env) == {
        "train": "aws_access_key_id=AK\naws_secret_access_key=SK\n"
    }
    d = tmp_path / "s3-credentials"
    d.mkdir()
    (d / "access-key-id").write_text("AK2\n")
    (d / "secret-access-key").write_text("SK2")
    assert (
        credentials(spec, tmp_path, {})["train"]
        == "aws_access_key_id=AK2\naws_secret_access_key=SK2\n"
    )
    sources, options = sources_and_options(spec, Path("/c"))
    assert sources == ["train=s3://imagenet/train/"]
    assert "train.credentials_file=/c/train" in options
    assert not any("AK" in o for o in options)
    with pytest.raises(errors.ConfigError, match="FLUIDCACHE_SECRET_S3_CREDENTIALS_ACCESS_KEY_ID"):
        credentials(spec, None, {})


def test_hub_sample_gives_its_token_as_the_mounts_credentials_file(tmp_path: Path) -> None:
    spec = load((SAMPLES / "hf-model.yaml").read_text())
    env = {secret_env("hf-token", "token"): "hf_x"}
    assert env.keys() == {"FLUIDCACHE_SECRET_HF_TOKEN_TOKEN"}
    assert credentials(spec, None, env) == {"llm": "token=hf_x\n"}
    sources, options = sources_and_options(spec, Path("/c"))
    assert sources == ["llm=hf://Qwen/Qwen2.5-0.5B-Instruct@main"]
    assert options == ["llm.credentials_file=/c/llm"]


def test_a_runtime_profile_in_the_file_stands_in_for_the_runtime() -> None:
    spec = load((SAMPLES / "runtimeprofile.yaml").read_text())
    assert spec.dataset.meta.name == "docs" and spec.runtime.replicas == 1


def test_a_file_without_a_runtime_is_refused() -> None:
    text = (SAMPLES / "model-cache.yaml").read_text().split("---")[0]
    with pytest.raises(errors.ConfigError, match="no FluidCacheRuntime models"):
        load(text)
