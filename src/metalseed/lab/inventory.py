"""pyinfra inventory groups from a lab's state (used by inventory/lab.py and by tests).

Only keys the cluster model accepts (plus pyinfra's ``ssh_*``) are produced.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metalseed.errors import LabError
from metalseed.lab import plan as planmod
from metalseed.lab import state as statemod
from metalseed.lab.state import LabState, MachineState

ENV_LAB = "METALSEED_LAB"
VIP_INTERFACE = "eth0"
HOST_KEYS_DIR = "/etc/ssh"

Host = tuple[str, dict[str, Any]]


def known_hosts_path(s: LabState) -> Path:
    return s.key.parent / "known_hosts"


def write_known_hosts(s: LabState) -> Path:
    """The lab's own known_hosts, written when it differs: every machine runs sshd with this
    host's keys (its /etc/ssh comes through the overlay), so they are the keys of every machine
    address. pyinfra then checks them strictly and warns of nothing; the file of another lab that
    used the same addresses does not matter."""
    path = known_hosts_path(s)
    if not path.parent.is_dir():  # not a lab on this machine (a state read for tests)
        return path
    keys = []
    for pub in sorted(Path(HOST_KEYS_DIR).glob("ssh_host_*_key.pub")):
        kind, key = pub.read_text().split()[:2]
        keys.append(f"{kind} {key}")
    text = "".join(f"{m.address} {k}\n" for m in s.machines for k in keys)
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path


def host_data(s: LabState, m: MachineState) -> dict[str, Any]:
    return {
        "ssh_hostname": str(m.address),
        "ssh_user": "root",
        "ssh_key": str(s.key),
        "ssh_known_hosts_file": str(known_hosts_path(s)),
        "ssh_strict_host_key_checking": "yes",
    }


def cluster_data(s: LabState) -> dict[str, Any]:
    data: dict[str, Any] = {
        "cluster_name": s.name,
        "node_network": str(s.subnet),
        "vip": str(s.vip),
        "vip_interface": VIP_INTERFACE,
    }
    if s.mirror_url:
        # The mirror the lab serves on its bridge, and the operator-side copy of its manifest.
        data["mirror_url"] = s.mirror_url
        data["mirror_dir"] = str(s.mirror_root)
    # The lab has no DNS: a client reaches an app by name with `curl --resolve
    # app.<lab>.test:443:<VIP>`, and the edge's certificate must name it for TLS to verify.
    data["edge_hostnames"] = [f"*.{s.name}.test"]
    if s.oom_score_adj_restricted:
        data["containerd_restrict_oom_score_adj"] = True
    # A machine's /proc/sys is read-only: kube-proxy must leave the conntrack table size and
    # timeouts as they are ("could not set conntrack parameters from kube-proxy configuration:
    # open /proc/sys/net/netfilter/nf_conntrack_max: read-only file system"); kind does the same.
    data["kube_proxy_settings"] = {"conntrack": {
        "maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"}}
    return data


def groups(s: LabState) -> dict[str, Any]:
    """``masters``, ``workers`` (, ``datastore``, ``tenant_workers``) and ``all`` in the
    inventory-file shapes pyinfra accepts; a lab without datastore machines has no ``datastore``
    group, one without tenant workers no ``tenant_workers``."""
    out: dict[str, Any] = {
        "masters": [(m.name, host_data(s, m)) for m in s.masters],
        "workers": [(m.name, host_data(s, m)) for m in s.workers],
    }
    if s.datastore:
        out["datastore"] = [(m.name, host_data(s, m)) for m in s.datastore]
    if s.tenant_workers:
        out["tenant_workers"] = [(m.name, host_data(s, m)) for m in s.tenant_workers]
    out["all"] = ([m.name for m in s.machines], cluster_data(s))
    return out


def lab_name_from_env() -> str:
    return planmod.check_lab_name(os.environ.get(ENV_LAB) or planmod.DEFAULT_NAME)


def load_groups(name: str | None = None, base: Path | None = None) -> dict[str, Any]:
    """Groups of a lab that is up; a clear LabError when it is not."""
    name = name or lab_name_from_env()
    s = statemod.load(statemod.lab_paths(name, base))
    if s is None:
        hint = f" --name {name}" if name != planmod.DEFAULT_NAME else ""
        raise LabError(
            f"lab {name!r} is not up (no state under {statemod.lab_paths(name, base).root}):"
            f" run `metalseed lab up{hint}` first (the lab is chosen by ${ENV_LAB})"
        )
    write_known_hosts(s)
    return groups(s)


def require_datastore(groups: dict[str, Any]) -> dict[str, Any]:
    """The groups of a lab that can be a seed (inventory/lab-seed.py): its tenants' API servers
    need a datastore and acme a tenant worker, so a lab booted without them is refused with how
    to boot one that has them."""
    missing = [what for group, what in (
        ("datastore", "no datastore machine, which a seed's tenants need"),
        ("tenant_workers", "no tenant worker machine, which group_data/lab-seed.py gives acme"),
    ) if group not in groups]
    if missing:
        name = lab_name_from_env()
        hint = f" --name {name}" if name != planmod.DEFAULT_NAME else ""
        raise LabError(
            f"lab {name!r} has {' and '.join(missing)}: run"
            f" `metalseed lab down{hint}` and `metalseed lab up{hint} --seed`"
        )
    return groups


def pyinfra_inventory(s: LabState, masters: Sequence[str] | None = None,
                      workers: Sequence[str] | None = None, **extra: Any) -> Any:
    """A ``pyinfra.api.Inventory`` of the lab, for tests and benchmarks that drive pyinfra's API.

    It holds the same data as inventory/lab.py minus ``group_data/`` (which the CLI adds), plus
    ``extra`` cluster-wide data. ``masters``/``workers`` re-assign machines to groups (a worker
    machine standing in for a fresh master, say).
    """
    from pyinfra.api import Inventory

    write_known_hosts(s)
    by_name = {m.name: m for m in s.machines}
    m_names = list(masters) if masters is not None else [m.name for m in s.masters]
    w_names = list(workers) if workers is not None else [m.name for m in s.workers
                                                         if m.name not in m_names]
    d_names = [m.name for m in s.datastore]
    t_names = [m.name for m in s.tenant_workers]
    names = m_names + w_names + d_names + t_names
    groups: dict[str, Any] = {"masters": (m_names, {}), "workers": (w_names, {}),
                              "lab": (names, {})}
    if d_names:
        groups["datastore"] = (d_names, {})
    if t_names:
        groups["tenant_workers"] = (t_names, {})
    return Inventory(([(n, host_data(s, by_name[n])) for n in names], {**cluster_data(s), **extra}),
                     **groups)
