"""Upstream Fluid's own CRDs beside ours in one API server (issue 12).

Fluid's CRDs and its documented samples come from the github.com/fluid-cloudnative/fluid module at
the pinned FLUID_VERSION (k8s/testenv/versions.env), fetched through the Go module proxy by
``build.sh`` into the cache beside the binaries; nothing of Fluid's is kept in this repository.
The checks go both ways, each a server-side apply dry run with strict field validation (so an
unknown field is an error, not silently pruned):

- each of our samples, with only ``apiVersion`` changed to data.fluid.io/v1alpha1 (and the runtime
  kinds to Fluid's nearest: ThinRuntime, ThinRuntimeProfile), against Fluid's schemas;
- each Dataset and DataLoad of Fluid's documented samples that Fluid's own schema accepts, with
  only ``apiVersion`` changed to ours, against our schemas.

What either side refuses must be exactly the differences listed here (and in the README): a new
difference fails the test, and so does one that went away without the list being updated.

    .venv/bin/python -m pytest -q k8s/testenv/tests/test_fluid_upstream.py
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster import fluid_dir
from support import NS, ROOT, Env, dataset, running_env, runtime, wait_for, webhook_args

FLUID_API = "data.fluid.io/v1alpha1"
OUR_API = "data.fluidcache.io/v1alpha1"
FILES = {"a.bin": os.urandom(100_000)}
# Fluid's nearest kinds to our runtime kinds (Fluid 1.0.8 has no CacheRuntime)
FLUID_KIND = {"FluidCacheRuntime": "ThinRuntime", "RuntimeProfile": "ThinRuntimeProfile"}

# What Fluid 1.0.8's schemas refuse of our samples: our deliberate extensions. A Dataset names a
# profile to get its runtime made (Fluid: a ThinRuntime names a profile with spec.profileName);
# our profile describes the whole runtime, sizes included (a ThinRuntimeProfile describes a FUSE
# implementation, named by its required fileSystemType, and leaves sizes to the ThinRuntime).
OUR_EXTENSIONS = {
    ("Dataset", 'unknown field "spec.runtimeProfile"'),
    ("ThinRuntimeProfile", 'unknown field "spec.description"'),
    ("ThinRuntimeProfile", 'unknown field "spec.replicas"'),
    ("ThinRuntimeProfile", 'unknown field "spec.tieredstore"'),
    ("ThinRuntimeProfile", "spec.fileSystemType: Required value"),
}
# What our schemas refuse of Fluid's documented samples: pod placement of a DataLoad (Fluid runs
# a load as a pod; a fluidcache load is a job on the master, which has no pod to place), and
# sources fluidcache has no adapter for (gs://, oss://, juicefs://, dataset://): refused when
# applied, naming the field, rather than accepted and failing later.
NOT_OURS = {
    # one of Fluid's docs abbreviates a DataLoad to its runAfter; ours requires the dataset
    # (Fluid's schema does not, and its controller fails such a load)
    ("DataLoad", "spec.dataset: Required value"),
    ("DataLoad", 'unknown field "spec.affinity"'),
    ("DataLoad", 'unknown field "spec.runAfter.affinityStrategy"'),
    ("Dataset", "spec.mounts[0].mountPoint: Invalid value"),
}

_UNDECLARED = re.compile(r"\.([\w.]+): field not declared in schema")
_PROBLEM = re.compile(
    r'unknown field "[^"]+"|[\w.\[\]]+: (?:Required value|Unsupported value|Invalid value)'
)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    crds = fluid_dir() / "crds"
    if not sorted(crds.glob("*.yaml")):
        pytest.fail(f"no Fluid CRDs in {crds}: run `bash k8s/testenv/build.sh` first")
    root = tmp_path_factory.mktemp("upstream")
    # the webhook registered by Service, as k8s/deploy does (the Service routes nowhere here:
    # its failurePolicy Ignore lets pods be created all the same)
    args = [*webhook_args(root), f"--webhook-service={NS}/fluidcache-controller:443"]
    with running_env(root, FILES, args, master_dataset="ours", nodes=3) as e:
        out = e.cp.kubectl("apply", "--server-side", "-f", str(crds), check=False)
        assert out.returncode == 0, out.stderr
        e.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        e.token_secrets("ours")
        yield e


def _apply_dry_run(env: Env, doc: dict[str, Any]) -> tuple[set[str], str]:
    out = env.cp.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--validate=strict",
        "--field-manager=fluid-compat-test",
        "-n",
        NS,
        "-f",
        "-",
        input=json.dumps(doc),
        check=False,
    )
    if out.returncode == 0:
        return set(), ""
    # server-side apply names one undeclared field at a time, as ``.spec.x: field not declared``
    undeclared = {f'unknown field "{f}"' for f in _UNDECLARED.findall(out.stderr)}
    return set(_PROBLEM.findall(out.stderr)) | undeclared, out.stderr.strip()


def dry_run(env: Env, doc: dict[str, Any]) -> set[str]:
    """What the API server refuses of ``doc`` (strict: unknown fields are errors). Unknown
    fields stop decoding before validation, so they are taken out and the rest tried again, to
    see the validation errors too; an error it cannot name is returned whole."""
    doc = copy.deepcopy(doc)
    found: set[str] = set()
    for _ in range(10):
        problems, stderr = _apply_dry_run(env, doc)
        if not stderr:
            return found
        if not problems:
            return found | {stderr}
        found |= problems
        unknown = [p for p in problems if p.startswith("unknown field")]
        if not unknown:
            return found
        for p in unknown:
            *parents, leaf = p.split('"')[1].split(".")
            node: Any = doc
            for key in parents:
                node = node.get(key, {}) if isinstance(node, dict) else {}
            if isinstance(node, dict):
                node.pop(leaf, None)
    return found


def documents(path: Path) -> Iterator[dict[str, Any]]:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            yield doc


def fluid_doc_samples() -> list[tuple[str, dict[str, Any]]]:
    """Fluid's documented Datasets and DataLoads (``docs/en/samples/*.md``), from its YAML
    blocks and ``cat <<EOF`` blocks."""
    out = []
    for md in sorted((fluid_dir() / "samples").glob("*.md")):
        for block in re.findall(r"```[a-z]*\n(.*?)```", md.read_text(), re.S):
            heredoc = re.search(r"<<\s*'?EOF'?[^\n]*\n(.*?)\nEOF", block, re.S)
            text = heredoc.group(1) if heredoc else block
            if FLUID_API not in text:
                continue
            try:
                docs = list(yaml.safe_load_all(text))
            except yaml.YAMLError:
                continue  # prose with a YAML fragment in it, not a manifest
            for doc in docs:
                if (
                    isinstance(doc, dict)
                    and doc.get("apiVersion") == FLUID_API
                    and doc.get("kind") in ("Dataset", "DataLoad")
                    and isinstance(doc.get("spec"), dict)
                ):
                    out.append((md.name, doc))
    return out


@pytest.mark.timeout(60)
def test_both_groups_are_served_side_by_side(env: Env) -> None:
    fluid = set(env.kubectl("api-resources", "--api-group=data.fluid.io", "-o", "name").split())
    ours = set(env.kubectl("api-resources", "--api-group=data.fluidcache.io", "-o", "name").split())
    assert {"datasets.data.fluid.io", "dataloads.data.fluid.io", "thinruntimes.data.fluid.io"} <= (
        fluid
    )
    assert {"datasets.data.fluidcache.io", "fluidcacheruntimes.data.fluidcache.io"} <= ours


@pytest.mark.timeout(60)
def test_the_webhook_is_registered_by_service(env: Env) -> None:
    """What a cluster gets from k8s/deploy: the API server accepts kopf's configuration with our
    Service (and the caBundle), no URL; failures ignored, so pods never wait on the controller."""
    config = wait_for(
        "the webhook configuration",
        lambda: env.get("mutatingwebhookconfigurations", "fluidcache.data.fluidcache.io"),
    )
    [hook] = config["webhooks"]
    client = hook["clientConfig"]
    assert "url" not in client
    assert client["service"] == {
        "namespace": NS,
        "name": "fluidcache-controller",
        "port": 443,
        "path": "/cache-affinity",
    }
    ca = (env.data.parent / "ca.crt").read_bytes()
    assert base64.b64decode(client["caBundle"]) == ca
    assert hook["failurePolicy"] == "Ignore"
    assert hook["rules"][0]["resources"] == ["pods"]


@pytest.mark.timeout(180)
def test_each_controller_keeps_to_its_own_group(env: Env) -> None:
    """A Fluid Dataset and DataLoad named like ours: our controller binds ours and never
    touches Fluid's (no status, finalizer or annotation, no node label of its own); Fluid's
    resources do not list ours."""
    fluid_ds = {**dataset("ours"), "apiVersion": FLUID_API}
    fluid_load = {
        "apiVersion": FLUID_API,
        "kind": "DataLoad",
        "metadata": {"name": "ours-load", "namespace": NS},
        "spec": {"dataset": {"name": "ours", "namespace": NS}},
    }
    for obj in (fluid_ds, fluid_load):
        assert env.apply(obj).returncode == 0
    assert env.apply(dataset("ours")).returncode == 0
    assert env.apply(runtime("ours", env.fc.master_url, replicas=1)).returncode == 0
    wait_for(
        "our Dataset Bound",
        lambda: (
            env.get("datasets.data.fluidcache.io", "ours", "-n", NS).get("status", {}).get("phase")
            == "Bound"
        ),
    )
    time.sleep(5)  # more than two reconcile intervals (2 s) and job polls (1 s) of our controller
    for kind, name in (("datasets", "ours"), ("dataloads", "ours-load")):
        obj = env.get(f"{kind}.data.fluid.io", name, "-n", NS)
        meta = obj["metadata"]
        assert "status" not in obj, obj
        assert not meta.get("finalizers"), meta
        assert not any("fluidcache" in k for k in meta.get("annotations") or {}), meta
        assert meta["generation"] == 1
    assert [
        d["metadata"]["name"] for d in env.get("datasets.data.fluid.io", "-n", NS)["items"]
    ] == ["ours"]
    assert not env.get("dataloads.data.fluidcache.io", "-n", NS)["items"]
    # the cache nodes carry our runtime's label only
    assert env.labelled("fluid.io/s-fluidcache-default-ours")
    env.kubectl("delete", "datasets.data.fluid.io", "ours", "-n", NS, "--wait=true")
    env.kubectl("delete", "dataloads.data.fluid.io", "ours-load", "-n", NS, "--wait=true")
    assert env.get("datasets.data.fluidcache.io", "ours", "-n", NS)["status"]["phase"] == "Bound"


@pytest.mark.timeout(120)
def test_our_samples_port_to_fluid_by_changing_only_apiversion(env: Env) -> None:
    refused: set[tuple[str, str]] = set()
    checked = 0
    for sample in sorted((ROOT / "k8s/samples").glob("*.yaml")):
        for doc in documents(sample):
            if doc["apiVersion"] != OUR_API:
                continue  # a Secret
            kind = FLUID_KIND.get(doc["kind"], doc["kind"])
            port = {**doc, "apiVersion": FLUID_API, "kind": kind}
            refused |= {(kind, p) for p in dry_run(env, port)}
            checked += 1
    assert checked >= 10
    assert refused == OUR_EXTENSIONS


@pytest.mark.timeout(240)
def test_fluids_documented_samples_apply_to_ours_by_changing_only_apiversion(env: Env) -> None:
    samples = fluid_doc_samples()
    namespaces = {d["metadata"].get("namespace") for _, d in samples} - {None, NS}
    for ns in sorted(namespaces):
        env.kubectl("create", "namespace", ns)
    refused: set[tuple[str, str]] = set()
    kinds: dict[str, int] = {}
    fluid_refuses = []
    for source, doc in samples:
        # a few docs name objects loadA, loadB: no API server takes upper case in a name
        doc = {**doc, "metadata": {**doc["metadata"], "name": doc["metadata"]["name"].lower()}}
        own = dry_run(env, doc)
        if own:  # Fluid's own schema refuses its doc: not a port test
            fluid_refuses.append(f"{source} {doc['kind']} {doc['metadata']['name']}: {own}")
            continue
        kinds[doc["kind"]] = kinds.get(doc["kind"], 0) + 1
        problems = dry_run(env, {**doc, "apiVersion": OUR_API})
        assert {(doc["kind"], p) for p in problems} <= NOT_OURS, (source, doc, problems)
        refused |= {(doc["kind"], p) for p in problems}
    print(f"Fluid's samples checked: {kinds}; refused by Fluid's own schema:", *fluid_refuses)
    assert kinds.get("Dataset", 0) >= 20 and kinds.get("DataLoad", 0) >= 8, kinds
    assert refused == NOT_OURS
