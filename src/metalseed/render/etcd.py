"""etcd on the masters: the files each master runs from, as pure functions of the model.

Layout on a master::

    /etc/systemd/system/metalseed-etcd.service   the unit (our own, see UNIT_NAME)
    /etc/metalseed/etcd/etcd.env                 every setting that is fixed for a member
    /etc/metalseed/etcd/bootstrap.env            initial-cluster*: only read while the data dir is empty
    /etc/metalseed/etcd/etcdctl.env              for operators: `set -a; . etcdctl.env; etcdctl ...`
    /etc/metalseed/etcd/pki/                     this member's keys, the healthcheck client, the CA cert

Settings go to an environment file rather than etcd's YAML ``--config-file`` because etcd ignores
every environment variable once a config file is given, and the bootstrap settings must live in a
file of their own (see :func:`render_bootstrap`).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath

from metalseed.model import Cluster, Node

UNIT_NAME = "metalseed-etcd.service"
"""Our own unit rather than Debian's ``etcd.service``: Debian's package starts a single-member etcd
on localhost as soon as it is installed, and restarts ``etcd.service`` on every package upgrade --
on all masters at once under unattended-upgrades, which loses quorum. Debian's unit is masked; ours
is restarted only by the deploy, one member at a time, behind a health gate."""
PACKAGED_UNIT = "etcd.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
CONFIG_DIR = "/etc/metalseed/etcd"
PKI_DIR = f"{CONFIG_DIR}/pki"
ENV_FILE = f"{CONFIG_DIR}/etcd.env"
BOOTSTRAP_FILE = f"{CONFIG_DIR}/bootstrap.env"
ETCDCTL_ENV_FILE = f"{CONFIG_DIR}/etcdctl.env"
USER = "etcd"
DEBIAN_PACKAGES = ("etcd-server", "etcd-client")
TARBALL_ROOT = "/opt/metalseed/etcd"
TARBALL_CACHE = "/var/cache/metalseed"

# etcd 3.4 has no --tls-min-version (it arrived in 3.5). etcd 3.4 itself sets Go's MinVersion to
# TLS 1.2, and naming only ECDHE+AEAD suites removes every CBC/RSA-kx/SHA1 suite from TLS 1.2.
# TLS 1.3 (whose suites are all AEAD and not configurable in Go) stays allowed.
CIPHER_SUITES = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
)


@dataclass(frozen=True)
class HostFile:
    """A file the deploy keeps on a master; ``store_id`` files come from the PKI store."""

    path: str
    mode: int
    owner: str = "root"
    group: str = "root"
    store_id: str | None = None
    """PKI store id (``etcd/ca``); ``cert`` says whether the ``.crt`` or the ``.key`` is meant."""
    cert: bool = True


@dataclass(frozen=True)
class PKIFiles:
    ca: str
    cert: str
    key: str
    peer_cert: str
    peer_key: str
    client_cert: str
    client_key: str


PKI = PKIFiles(
    ca=f"{PKI_DIR}/ca.crt",
    cert=f"{PKI_DIR}/server.crt",
    key=f"{PKI_DIR}/server.key",
    peer_cert=f"{PKI_DIR}/peer.crt",
    peer_key=f"{PKI_DIR}/peer.key",
    client_cert=f"{PKI_DIR}/healthcheck-client.crt",
    client_key=f"{PKI_DIR}/healthcheck-client.key",
)


def pki_files(member: Node) -> list[HostFile]:
    """What a master receives from the store: its own pairs, the healthcheck client, the CA trust
    bundle (the CA, plus the other CA while a rotation runs). Never a CA key, never another
    member's key."""
    server_id = f"etcd/{member.name}/server"
    peer_id = f"etcd/{member.name}/peer"
    client_id = "etcd/healthcheck-client"
    cert, key = 0o644, 0o600
    return [
        HostFile(PKI.ca, cert, USER, USER, "etcd/ca-bundle", cert=True),
        HostFile(PKI.cert, cert, USER, USER, server_id, cert=True),
        HostFile(PKI.key, key, USER, USER, server_id, cert=False),
        HostFile(PKI.peer_cert, cert, USER, USER, peer_id, cert=True),
        HostFile(PKI.peer_key, key, USER, USER, peer_id, cert=False),
        HostFile(PKI.client_cert, cert, USER, USER, client_id, cert=True),
        HostFile(PKI.client_key, key, USER, USER, client_id, cert=False),
    ]


def binary_dir(cluster: Cluster) -> str:
    """Where ``etcd`` and ``etcdctl`` live: Debian's /usr/bin, or a directory per tarball hash so
    that a new tarball never overwrites the binary a running member was started from."""
    if cluster.etcd.source == "tarball":
        assert cluster.etcd.tarball_sha256 is not None
        return f"{TARBALL_ROOT}/{cluster.etcd.tarball_sha256[:16]}"
    return "/usr/bin"


def tarball_path(cluster: Cluster) -> str:
    assert cluster.etcd.tarball_sha256 is not None
    return f"{TARBALL_CACHE}/etcd-{cluster.etcd.tarball_sha256[:16]}.tar.gz"


def etcdctl(cluster: Cluster) -> str:
    return f"{binary_dir(cluster)}/etcdctl"


def member_peer_url(cluster: Cluster, member: Node) -> str:
    return f"https://{member.address}:{cluster.etcd.peer_port}"


def member_client_url(cluster: Cluster, member: Node) -> str:
    return f"https://{member.address}:{cluster.etcd.client_port}"


def cluster_token(cluster: Cluster) -> str:
    return f"{cluster.name}-etcd"


def _env(pairs: list[tuple[str, str]], header: str) -> str:
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    # systemd's EnvironmentFile= takes VAR=value with optional double quotes; none of our values
    # contains a space or a quote, so they are written bare (and stay valid for `sh` too).
    for key, value in pairs:
        if any(c in value for c in " \t\"'\\$`"):
            raise ValueError(f"{key}: value {value!r} cannot be written to an environment file")
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


def render_env(cluster: Cluster, member: Node) -> str:
    """Every setting that stays the same for the life of a member."""
    e = cluster.etcd
    addr = str(member.address)
    pairs = [
        ("ETCD_NAME", member.name),
        ("ETCD_DATA_DIR", e.data_dir),
        ("ETCD_LISTEN_PEER_URLS", member_peer_url(cluster, member)),
        ("ETCD_INITIAL_ADVERTISE_PEER_URLS", member_peer_url(cluster, member)),
        # Loopback too, so etcdctl on the master and the kube-apiserver beside it need no
        # node address; the certificates carry 127.0.0.1 and localhost for that.
        ("ETCD_LISTEN_CLIENT_URLS", ",".join(dict.fromkeys(
            [f"https://{addr}:{e.client_port}", f"https://127.0.0.1:{e.client_port}"]))),
        ("ETCD_ADVERTISE_CLIENT_URLS", member_client_url(cluster, member)),
        # Plain HTTP, loopback only: /metrics and /health for local scrapers and probes, which
        # then need no client certificate. Nothing else is served without TLS.
        ("ETCD_LISTEN_METRICS_URLS", f"http://127.0.0.1:{e.metrics_port}"),
        ("ETCD_HEARTBEAT_INTERVAL", str(e.heartbeat_ms)),
        ("ETCD_ELECTION_TIMEOUT", str(e.election_ms)),
        ("ETCD_CLIENT_CERT_AUTH", "true"),
        ("ETCD_TRUSTED_CA_FILE", PKI.ca),
        ("ETCD_CERT_FILE", PKI.cert),
        ("ETCD_KEY_FILE", PKI.key),
        ("ETCD_AUTO_TLS", "false"),
        ("ETCD_PEER_CLIENT_CERT_AUTH", "true"),
        ("ETCD_PEER_TRUSTED_CA_FILE", PKI.ca),
        ("ETCD_PEER_CERT_FILE", PKI.peer_cert),
        ("ETCD_PEER_KEY_FILE", PKI.peer_key),
        ("ETCD_PEER_AUTO_TLS", "false"),
        ("ETCD_CIPHER_SUITES", ",".join(CIPHER_SUITES)),
        ("ETCD_ENABLE_V2", "false"),
        # A member whose data disagrees with its peers refuses to start instead of serving it.
        ("ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", "true"),
        ("ETCD_LOGGER", "zap"),
        ("ETCD_LOG_OUTPUTS", "stderr"),
    ]
    return _env(pairs, f"etcd member {member.name} of cluster {cluster.name}.\n"
                       "Written by metalseed (deploys/etcd.py); edits are overwritten.")


def render_bootstrap(initial_cluster: str, state: str, token: str) -> str:
    """The settings etcd reads only while its data directory is empty.

    They live apart from :func:`render_env` because they describe the cluster *as it was when
    this member joined*: keeping them out of etcd.env means a later membership change does not
    rewrite (and restart) every other member, and a member with data never sees a change.
    """
    if state not in ("new", "existing"):
        raise ValueError(f"initial cluster state {state!r}: 'new' or 'existing'")
    return _env(
        [
            ("ETCD_INITIAL_CLUSTER", initial_cluster),
            ("ETCD_INITIAL_CLUSTER_STATE", state),
            ("ETCD_INITIAL_CLUSTER_TOKEN", token),
        ],
        "Read by etcd only while its data directory is empty (first start of this member).\n"
        "Written by metalseed.",
    )


def render_etcdctl_env(cluster: Cluster) -> str:
    return _env(
        [
            ("ETCDCTL_API", "3"),
            ("ETCDCTL_ENDPOINTS", f"https://127.0.0.1:{cluster.etcd.client_port}"),
            ("ETCDCTL_CACERT", PKI.ca),
            ("ETCDCTL_CERT", PKI.client_cert),
            ("ETCDCTL_KEY", PKI.client_key),
        ],
        "For etcdctl on this master: set -a; . /etc/metalseed/etcd/etcdctl.env; set +a",
    )


def render_unit(cluster: Cluster, member: Node) -> str:
    etcd = f"{binary_dir(cluster)}/etcd"
    return f"""\
# Written by metalseed (deploys/etcd.py); edits are overwritten.
[Unit]
Description=etcd member {member.name} of cluster {cluster.name}
Documentation=https://etcd.io/docs/v3.4/op-guide/configuration/
After=network-online.target
Wants=network-online.target
Conflicts={PACKAGED_UNIT}

[Service]
# etcd reports READY once it has joined the cluster and can serve, so `systemctl start` returns
# only then; a restart of one member therefore doubles as a wait for it to rejoin.
Type=notify
User={USER}
Group={USER}
EnvironmentFile={ENV_FILE}
EnvironmentFile=-{BOOTSTRAP_FILE}
ExecStart={etcd}
Restart=always
RestartSec=2s
TimeoutStartSec=120s
LimitNOFILE=65536
UMask=0077
NoNewPrivileges=yes
# /usr, /boot and /etc read-only for etcd; its data directory under /var stays writable.
ProtectSystem=full
ProtectHome=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
"""


def data_dir_parent(cluster: Cluster) -> str:
    return str(PurePosixPath(cluster.etcd.data_dir).parent)


# ---------------------------------------------------------------------------------------------
# Day-2 commands, rendered here so that their argv is unit-tested like the files.


def snapshot_save_command(cluster: Cluster, remote_path: str) -> str:
    """Save a snapshot of the local member (its own consistent copy of the keyspace) and print
    its status as JSON (hash, revision, totalKey, totalSize) on the last line."""
    ctl = shlex.quote(etcdctl(cluster))
    path = shlex.quote(remote_path)
    return (
        f"set -a && . {ETCDCTL_ENV_FILE} && set +a && umask 077 && "
        f"rm -f {path} {path}.part && {ctl} --command-timeout=120s snapshot save {path} >&2 && "
        f"{ctl} -w json snapshot status {path}"
    )


def snapshot_restore_command(cluster: Cluster, member: Node, snapshot: str, token: str) -> str:
    """Rebuild ``member``'s data directory from a snapshot as a member of a fresh cluster of all
    masters. The old data directory is kept beside it, renamed, never deleted."""
    ctl = shlex.quote(etcdctl(cluster))
    data_dir = cluster.etcd.data_dir
    args = [
        ctl, "snapshot", "restore", shlex.quote(snapshot),
        f"--name={member.name}",
        f"--initial-cluster={cluster.etcd_initial_cluster()}",
        f"--initial-cluster-token={token}",
        f"--initial-advertise-peer-urls={member_peer_url(cluster, member)}",
        f"--data-dir={shlex.quote(data_dir)}",
        # The restore runs before etcd's own corrupt check: refuse a snapshot whose hash is bad.
        "--skip-hash-check=false",
    ]
    d = shlex.quote(data_dir)
    return (
        f"set -e; rmdir {d} 2>/dev/null || true; "
        f"if [ -e {d} ]; then mv {d} {d}.before-restore-$(date +%Y%m%dT%H%M%S); fi; "
        f"ETCDCTL_API=3 {' '.join(args)} >&2; chown -R {USER}:{USER} {d}; chmod 0700 {d}"
    )
