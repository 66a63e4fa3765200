"""Certificates as installed on the hosts, compared with the store.

The store says what *should* be deployed; what counts when a certificate expires is what the
services actually load. So the check reads every certificate under the directories our deploys
install into, on every host, and reports each one against the store.

Parsing and comparison are pure; :func:`collect` is the only part that reaches hosts (over pyinfra's
SSH connector, with the inventory's connection settings).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from pyinfra.api import FactBase

from metalseed.model import Cluster, PKISettings
from metalseed.pki import x509 as px
from metalseed.pki.plan import INVALID, Inventory, expiry_state

# Everything our deploys install lives below these; CA bundles of the OS are not ours to check.
# /etc/kubernetes as a whole: the control plane's pki/ and each node's kubelet/pki/ (serving certificate).
SCAN_DIRS = ("/etc/metalseed", "/etc/etcd/pki", "/etc/kubernetes", "/etc/nginx/metalseed")
KUBECONFIG_DIRS = ("/etc/kubernetes",)
"""Kubeconfigs (``*.conf``, ``kubeconfig``) below these: their embedded certificates are read too."""
KUBECONFIG_FIELDS = ("certificate-authority-data", "client-certificate-data")
_MARK = "==> metalseed-cert "

MATCHES = "matches store"
STALE = "differs from store"
UNKNOWN = "not in store"


def kubeconfig_path(path: str, field: str) -> str:
    """How a certificate embedded in a kubeconfig is named: ``<file>#<field>``."""
    return f"{path}#{field}"


def dump_command(dirs: Iterable[str] = SCAN_DIRS,
                 kubeconfig_dirs: Iterable[str] = KUBECONFIG_DIRS) -> str:
    """A POSIX shell command printing every ``*.crt``/``*.pem`` under ``dirs`` after a marker,
    then the certificates embedded in every kubeconfig under ``kubeconfig_dirs`` (after a marker
    ``<file>#<field>``), decoded on the host."""
    quoted = " ".join(shlex.quote(d) for d in dirs)
    # Only CERTIFICATE blocks leave the host: a bundle file may also hold the private key.
    only_certs = "sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p'"
    files = (
        f"for d in {quoted}; do [ -d \"$d\" ] || continue; "
        "find \"$d\" -type f \\( -name '*.crt' -o -name '*.pem' \\) ! -name '*key*' -print; "
        "done | sort | while read -r f; do "
        f"echo '{_MARK}'\"$f\"; {only_certs} \"$f\"; echo; done"
    )
    kdirs = " ".join(shlex.quote(d) for d in kubeconfig_dirs)
    if not kdirs:
        return files
    fields = " ".join(KUBECONFIG_FIELDS)
    kubeconfigs = (
        f"for d in {kdirs}; do [ -d \"$d\" ] || continue; "
        "find \"$d\" -type f \\( -name '*.conf' -o -name kubeconfig \\) -print; "
        "done | sort | while read -r f; do "
        f"for k in {fields}; do "
        # Only the named fields are read (never client-key-data), and only certificates printed.
        "v=$(sed -n \"s/^ *$k: *//p\" \"$f\" | head -n 1); [ -n \"$v\" ] || continue; "
        f"echo '{_MARK}'\"$f#$k\"; printf '%s' \"$v\" | base64 -d 2>/dev/null | {only_certs}; "
        "echo; done; done"
    )
    return f"{{ {files}; }}; {{ {kubeconfigs}; }}"


@dataclass(frozen=True)
class Installed:
    host: str
    path: str
    info: px.CertInfo | None
    fingerprint: str
    """SHA-256 of the DER of the first certificate in the file (the leaf of a chain)."""
    error: str = ""
    all_fingerprints: tuple[str, ...] = ()
    """Of every certificate in the file: a CA bundle holds several."""


def parse_dump(host: str, text: str) -> list[Installed]:
    out: list[Installed] = []
    chunks = text.split(_MARK)
    for chunk in chunks[1:]:
        path, _, body = chunk.partition("\n")
        try:
            certs = x509.load_pem_x509_certificates(body.encode())
        except ValueError as e:
            out.append(Installed(host, path.strip(), None, "", f"not a PEM certificate ({e})"))
            continue
        fps = tuple(fingerprint(c) for c in certs)
        out.append(Installed(host, path.strip(), px.describe(certs[0]), fps[0],
                             all_fingerprints=fps))
    return out


@dataclass(frozen=True)
class InstalledStatus:
    item: Installed
    state: str  # ok | due | expired | invalid
    store: str  # MATCHES / STALE / UNKNOWN, with the store id when known
    detail: str = ""


def compare(items: Iterable[Installed], inventory: Inventory, settings: PKISettings,
            now: dt.datetime) -> list[InstalledStatus]:
    by_fp: dict[str, str] = {}
    # etcd server and peer certificates share subject and SANs, so one subject can name several ids.
    by_subject: dict[tuple[str, str], list[str]] = {}
    for status in inventory.all():
        if status.cert is None or status.info is None:
            continue
        by_fp[fingerprint(status.cert)] = status.id
        by_subject.setdefault((status.info.subject, status.info.issuer), []).append(status.id)
    out = []
    for item in items:
        if item.info is None:
            out.append(InstalledStatus(item, INVALID, UNKNOWN, item.error))
            continue
        if item.fingerprint in by_fp:
            store = f"{MATCHES} ({by_fp[item.fingerprint]})"
        elif (item.info.subject, item.info.issuer) in by_subject:
            store = f"{STALE} ({' or '.join(by_subject[(item.info.subject, item.info.issuer)])})"
        else:
            store = UNKNOWN
        state, reason = expiry_state(item.info, settings, now)
        out.append(InstalledStatus(item, state, store, reason))
    return out


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(px.serialization.Encoding.DER)).hexdigest()


class InstalledCertificates(FactBase[str]):
    """Raw dump of the certificates installed under metalseed's directories on a host."""

    abstract = False

    def command(self, dirs: tuple[str, ...] = SCAN_DIRS,
                kubeconfig_dirs: tuple[str, ...] = KUBECONFIG_DIRS) -> str:
        return dump_command(dirs, kubeconfig_dirs)

    @staticmethod
    def default() -> str:
        return ""  # a host with none of our directories (a worker) prints nothing

    def process(self, output: list[str]) -> str:
        return "\n".join(output)


def collect(cluster: Cluster, pyinfra_inventory: Any) -> tuple[list[Installed], dict[str, str]]:
    """Read installed certificates from every host. Returns (items, {host: connection error})."""
    from pyinfra.api import Config, State
    from pyinfra.api.connect import connect_all, disconnect_all
    from pyinfra.api.exceptions import PyinfraError
    from pyinfra.api.facts import get_facts

    # FAIL_PERCENT=100: an unreachable host is reported in the table, not a reason to stop.
    state = State(pyinfra_inventory, Config(CONNECT_TIMEOUT=5, FAIL_PERCENT=100))
    with contextlib.suppress(PyinfraError):  # raised when no host at all could be reached
        connect_all(state)
    errors = {h.name: "could not connect over SSH" for h in pyinfra_inventory
              if h not in state.activated_hosts}
    if not state.activated_hosts:
        return [], errors
    try:
        raw = get_facts(state, InstalledCertificates)
    finally:
        disconnect_all(state)
    items: list[Installed] = []
    for host, text in raw.items():
        if text is None:
            errors.setdefault(host.name, "reading certificates failed")
            continue
        node = next((n.name for n in cluster.nodes if n.inventory_name == host.name), host.name)
        items.extend(parse_dump(node, text))
    return items, errors
