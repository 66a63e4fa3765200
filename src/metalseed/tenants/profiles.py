"""Size profiles of tenant control planes (ACK's "gears"): replicas, requests and limits per
component, the API server's in-flight limits, and the tenant's datastore quota.

A profile's :attr:`Profile.requests` is what placement reserves on a seed for the tenant.
"""

from __future__ import annotations

from dataclasses import dataclass

COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
MI = 2**20


@dataclass(frozen=True)
class Resources:
    cpu_request_m: int
    memory_request: int
    memory_limit: int
    cpu_limit_m: int | None = None
    """None: no CPU limit (throttling an API server under a burst does more harm than good)."""


@dataclass(frozen=True)
class Profile:
    name: str
    replicas: int
    """Replicas of each component; > 1 gets a PodDisruptionBudget (maxUnavailable 1)."""
    resources: tuple[tuple[str, Resources], ...]
    max_requests_inflight: int
    max_mutating_requests_inflight: int
    datastore_quota: int
    """Bytes the tenant may keep in the datastore (checked by ``tenants status``)."""

    def component(self, name: str) -> Resources:
        return dict(self.resources)[name]

    @property
    def requests(self) -> tuple[int, int]:
        """(millicores, bytes) the whole control plane requests: what a seed must have free."""
        cpu = sum(r.cpu_request_m for _, r in self.resources) * self.replicas
        mem = sum(r.memory_request for _, r in self.resources) * self.replicas
        return cpu, mem


def _profile(name: str, replicas: int, apiserver: Resources, controller_manager: Resources,
             scheduler: Resources, inflight: int, mutating: int, quota_mib: int) -> Profile:
    return Profile(name, replicas,
                   (("kube-apiserver", apiserver), ("kube-controller-manager", controller_manager),
                    ("kube-scheduler", scheduler)),
                   inflight, mutating, quota_mib * MI)


PROFILES: dict[str, Profile] = {
    p.name: p for p in (
        _profile("small", 1, Resources(250, 256 * MI, 512 * MI), Resources(100, 96 * MI, 256 * MI),
                 Resources(50, 48 * MI, 128 * MI), 200, 100, 512),
        _profile("medium", 2, Resources(500, 512 * MI, 1024 * MI),
                 Resources(200, 128 * MI, 384 * MI), Resources(100, 64 * MI, 192 * MI), 400, 200,
                 2048),
        _profile("large", 3, Resources(1000, 1024 * MI, 3072 * MI),
                 Resources(500, 256 * MI, 768 * MI), Resources(250, 128 * MI, 384 * MI), 800, 400,
                 8192),
    )
}
