"""Tenants as data: ``tenants = {"acme": {"profile": "small", "kubernetes_version": "1.36",
"labels": {...}, "workers": [...]}}`` in a seed inventory's group data, validated like every other
setting (every problem at once, each naming the key, what was found and what is accepted)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from metalseed.errors import ModelError, ModelErrors
from metalseed.tenants.profiles import PROFILES

NAMESPACE_PREFIX = "tenant-"
# The namespace tenant-<name> is an RFC 1123 label: at most 63 characters in all.
MAX_NAME = 63 - len(NAMESPACE_PREFIX)
TENANT_KEYS = ("profile", "kubernetes_version", "labels", "workers")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Label keys and values as Kubernetes accepts them (an optional DNS prefix, a name of <= 63).
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


@dataclass(frozen=True)
class TenantSpec:
    name: str
    profile: str
    kubernetes_version: str
    """The exact pinned version (``v1.36.3``), resolved from what the data said (``1.36``)."""
    labels: tuple[tuple[str, str], ...] = ()
    workers: tuple[str, ...] = ()

    @property
    def namespace(self) -> str:
        return f"{NAMESPACE_PREFIX}{self.name}"


def _valid_label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    return (0 < len(name) <= 63 and bool(_LABEL_NAME.match(name))
            and (not prefix or (len(prefix) <= 253 and bool(_LABEL_PREFIX.match(prefix)))))


def resolve_version(value: object, pinned: Iterable[str]) -> str:
    """``1.36``, ``v1.36`` or an exact pinned ``v1.36.3`` → the pinned version; ValueError naming
    what the mirror holds otherwise (a minor with two patch releases pinned takes the newest)."""
    versions = sorted(pinned, key=lambda v: tuple(int(x) for x in v.lstrip("v").split(".")))
    text = str(value).strip()
    want = text if text.startswith("v") else f"v{text}"
    exact = [v for v in versions if v == want]
    minor = [v for v in versions if v.rsplit(".", 1)[0] == want]
    if isinstance(value, str) and (exact or minor):
        return (exact or minor)[-1]
    raise ValueError(f"a Kubernetes version the mirror holds: {', '.join(versions) or 'none'} "
                     "(a minor such as 1.36 takes its pinned patch release)")


def parse_tenants(value: object, pinned_versions: Iterable[str],
                  default_version: str, hosts: Iterable[str] = ()) -> tuple[TenantSpec, ...]:
    """Every tenant of ``value`` (the ``tenants`` data), sorted by name, or ModelErrors listing
    every problem. ``hosts`` are the inventory's host names: a tenant's workers must be among them
    and belong to one tenant only."""
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ModelError("tenants", value, "a mapping of tenant name to its spec, such as "
                         '{"acme": {"profile": "small"}}')
    pinned = tuple(pinned_versions)
    known_hosts = set(hosts)
    errors: list[ModelError] = []
    specs: list[TenantSpec] = []
    owner: dict[str, str] = {}
    seen: dict[str, str] = {}
    for name, raw in value.items():
        field = f"tenants[{name!r}]"
        if not isinstance(name, str) or len(name) > MAX_NAME or not _LABEL.match(name):
            errors.append(ModelError("tenants", name, f"tenant names are RFC 1123 labels of at "
                                     f"most {MAX_NAME} characters (lower case, digits, '-'), "
                                     "such as 'acme'"))
            continue
        if name.lower() in seen:
            errors.append(ModelError("tenants", name, f"unique tenant names ({seen[name.lower()]!r} "
                                     "is already declared)"))
            continue
        seen[name.lower()] = name
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            errors.append(ModelError(field, raw, 'a mapping such as {"profile": "small"}'))
            continue
        for key in raw:
            if key not in TENANT_KEYS:
                close = difflib.get_close_matches(str(key), TENANT_KEYS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                errors.append(ModelError(f"{field}.{key}", raw[key],
                                         f"one of {', '.join(TENANT_KEYS)}{hint}"))
        profile = raw.get("profile", "small")
        if profile not in PROFILES:
            close = difflib.get_close_matches(str(profile), PROFILES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            errors.append(ModelError(f"{field}.profile", profile,
                                     f"one of {', '.join(PROFILES)}{hint}"))
        version = default_version
        if "kubernetes_version" in raw:
            try:
                version = resolve_version(raw["kubernetes_version"], pinned)
            except ValueError as e:
                errors.append(ModelError(f"{field}.kubernetes_version", raw["kubernetes_version"],
                                         str(e)))
        labels = raw.get("labels") or {}
        if not isinstance(labels, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) and _valid_label_key(k)
                and len(v) <= 63 and _LABEL_NAME.match(v) for k, v in labels.items()):
            errors.append(ModelError(f"{field}.labels", labels, "a mapping of Kubernetes label "
                                     "keys to values (at most 63 characters each), such as "
                                     '{"team": "payments"}'))
            labels = {}
        workers = raw.get("workers") or []
        if isinstance(workers, str) or not isinstance(workers, (list, tuple)) or not all(
                isinstance(w, str) for w in workers):
            errors.append(ModelError(f"{field}.workers", workers, "a list of inventory host names"))
            workers = []
        for w in workers:
            if known_hosts and w not in known_hosts:
                errors.append(ModelError(f"{field}.workers", w, "a host of this inventory: "
                                         + ", ".join(sorted(known_hosts))))
            elif w in owner:
                errors.append(ModelError(f"{field}.workers", w, f"a host no other tenant has "
                                         f"(it is a worker of {owner[w]!r})"))
            else:
                owner[w] = name
        specs.append(TenantSpec(name, str(profile), version,
                                tuple(sorted((str(k), str(v)) for k, v in labels.items())),
                                tuple(dict.fromkeys(workers))))
    if errors:
        raise ModelErrors(errors)
    return tuple(sorted(specs, key=lambda s: s.name))
