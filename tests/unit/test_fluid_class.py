"""k8s/fluid/cacheruntimeclass.yaml in the shape upstream Fluid's CacheRuntimeClass has.

Fluid 1.0.8, the newest release the Go module proxy serves, has no CacheRuntimeClass CRD (it
is on Fluid's main branch only), so no test here can validate against Fluid's schema. The shape
below is read from that branch's ``api/v1alpha1`` types and
``charts/fluid/fluid/crds/data.fluid.io_cacheruntimeclasses.yaml``: a component is workloadType,
options, template (a PodTemplateSpec), service, dependencies and executionEntries (mountUFS and
reportSummary: ``command``, a list of strings, and ``timeout``, int32 seconds). Each pod template
is validated as a PodTemplateSpec of the pinned Kubernetes.
"""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import yaml

from tests.unit.controller.test_render import k8s_version

ROOT = Path(__file__).resolve().parents[2]
TOP = {"apiVersion", "kind", "metadata", "fileSystemType", "topology", "extraResources"}
TOP |= {"dataOperationSpecs"}
COMPONENT = {"workloadType", "options", "template", "service", "dependencies", "executionEntries"}
OPERATIONS = {"DataLoad", "DataBackup", "DataMigrate", "DataProcess"}


def test_our_class_has_fluids_field_names_and_types() -> None:
    cls = yaml.safe_load((ROOT / "k8s/fluid/cacheruntimeclass.yaml").read_text())
    assert cls["apiVersion"] == "data.fluid.io/v1alpha1" and cls["kind"] == "CacheRuntimeClass"
    assert set(cls) <= TOP and isinstance(cls["fileSystemType"], str)
    assert set(cls["topology"]) == {"master", "worker", "client"}
    for name, component in cls["topology"].items():
        assert set(component) <= COMPONENT, (name, set(component) - COMPONENT)
        assert set(component["workloadType"]) == {"apiVersion", "kind"}
        template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": name},
            "template": component["template"],
        }
        kubernetes_validate.validate(template, k8s_version(), strict=True)
        for entry in (component.get("executionEntries") or {}).values():
            assert set(entry) <= {"command", "timeout"}
            assert all(isinstance(a, str) for a in entry["command"])
            assert isinstance(entry["timeout"], int) and 0 < entry["timeout"] < 2**31
    entries = cls["topology"]["master"]["executionEntries"]
    assert entries["mountUFS"]["command"] == ["fluidcache", "fluid", "mount-ufs"]
    assert entries["reportSummary"]["command"] == ["fluidcache", "fluid", "report-summary"]
    for op in cls["dataOperationSpecs"]:
        assert op["name"] in OPERATIONS
        assert set(op) <= {"name", "command", "args", "image"}
