"""The one exception tree of metalseed.

Every error metalseed raises derives from :class:`MetalseedError`. Foreign errors (grpc, subprocess,
kubernetes ``ApiException``, OS errors from the store) are translated where they enter our code, so
callers and the CLI only ever handle this tree. Where an error is also a classic built-in kind (a bad
value), it inherits that built-in too, as pyinfra's ``OperationValueError`` does.
"""

from __future__ import annotations


class MetalseedError(Exception):
    """Base of every metalseed error."""


class ModelError(MetalseedError, ValueError):
    """Invalid inventory or group data, found before any host is touched.

    ``field`` names the setting, ``host`` the host it was read from (None for cluster-wide
    settings), ``found`` what was there and ``accepted`` what would have been accepted.
    """

    def __init__(self, field: str, found: object, accepted: str, host: str | None = None) -> None:
        self.field = field
        self.found = found
        self.accepted = accepted
        self.host = host
        where = f"host {host!r}: " if host else ""
        super().__init__(f"{where}{field}: found {found!r}; accepted: {accepted}")


class ModelErrors(ModelError):
    """Several validation errors at once, so the operator fixes them in one go."""

    def __init__(self, errors: list[ModelError]) -> None:
        self.errors = errors
        Exception.__init__(
            self,
            f"{len(errors)} problem(s) in the inventory:\n" + "\n".join(f"  - {e}" for e in errors),
        )
        self.field = errors[0].field
        self.found = errors[0].found
        self.accepted = errors[0].accepted
        self.host = errors[0].host


class InventoryError(MetalseedError):
    """The inventory file itself could not be loaded."""


class PKIError(MetalseedError):
    """Problems with the certificate store or its material."""


class PKIIntegrityError(PKIError):
    """Material on disk is corrupt, mismatched, or not signed by its CA: never used."""


class CAReplacementRefused(PKIError):
    """A CA would have to be replaced; metalseed never does that silently."""


class LabError(MetalseedError):
    """The local lab could not be started, stopped, or driven."""


class EtcdError(MetalseedError):
    """An etcd operation failed (translated from grpc / python-etcd3 / etcdctl)."""


class HealthCheckError(MetalseedError):
    """A health gate failed; the run stops and leaves the rest of the cluster as it was."""


class DeployError(MetalseedError):
    """A deploy could not do its job on a host."""


class MirrorError(MetalseedError):
    """The artifact mirror could not be built, read, verified or served.

    A failed build names the component and carries the tail of the build tool's output.
    """


class MirrorIntegrityError(MirrorError):
    """A mirror file does not match the digest the manifest (or a pin) promises: never used."""


class ArtifactError(DeployError):
    """An artifact cannot be installed on a host: not in the mirror's manifest, no pinned sha256
    to check an upstream download against, or (on the host) a download whose sha256 differs."""


class KubernetesError(DeployError):
    """The Kubernetes API refused or failed a request (the client's ApiException, translated)."""


class PlacementError(MetalseedError):
    """Tenants could not be placed on the fleet's seeds (or the fleet file is wrong)."""


class KubernetesObjectError(MetalseedError, ValueError):
    """A cluster object metalseed rendered does not fit the pinned Kubernetes' schemas (unknown
    apiVersion or kind, unknown field, wrong type, missing required field): found offline,
    before any host is touched. ``problems`` holds one line per problem, each naming the object
    and the field path."""

    def __init__(self, problems: list[str], version: str) -> None:
        self.problems = problems
        self.version = version
        super().__init__(f"{len(problems)} cluster object problem(s) against the Kubernetes "
                         f"{version} schemas:\n" + "\n".join(f"  - {p}" for p in problems))
