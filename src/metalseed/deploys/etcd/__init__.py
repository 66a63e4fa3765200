"""etcd on the masters, one module per playbook: :mod:`.deploy` (install and converge),
:mod:`.backup`, :mod:`.restore`, :mod:`.replace`; what they share (facts, files, the operator-side
client, the health gate) is in :mod:`.common`."""

from metalseed.deploys.etcd.backup import etcd_backup, list_snapshots
from metalseed.deploys.etcd.common import client_for, tls_files, wait_cluster_healthy
from metalseed.deploys.etcd.deploy import etcd
from metalseed.deploys.etcd.replace import etcd_replace_member
from metalseed.deploys.etcd.restore import etcd_restore

__all__ = ["client_for", "etcd", "etcd_backup", "etcd_replace_member", "etcd_restore",
           "list_snapshots", "tls_files", "wait_cluster_healthy"]
