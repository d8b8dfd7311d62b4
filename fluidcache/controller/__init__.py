"""The Kubernetes controller: custom resources in ``data.fluidcache.io/v1alpha1`` (Dataset,
FluidCacheRuntime, DataLoad, DataBackup) turned into node labels, pods, volumes and master jobs.

``model`` parses the resources, ``reconcile`` is the pure part (resources and nodes in, desired
objects and statuses out), ``handlers`` is the thin kopf loop that applies them, ``kube`` its API
client. It talks to fluidcache only through ``fluidcache.client`` (never master/worker/ufs).
"""

from fluidcache.controller.model import API_VERSION, GROUP, VERSION

__all__ = ["API_VERSION", "GROUP", "VERSION"]
