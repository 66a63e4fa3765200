"""etcd on the masters, one module per playbook: :mod:`.deploy` (install and converge),
:mod:`.backup`, :mod:`.restore`, :mod:`.replace`; what they share (facts, files, the operator-side
client, the health gate) is in :mod:`.common`."""

from metalseed.deploys.etcd.backup import etcd_backup
from metalseed.deploys.etcd.common import client_for, wait_cluster_healthy
from metalseed.deploys.etcd.deploy import etcd
from metalseed.deploys.etcd.replace import etcd_replace_member
from metalseed.deploys.etcd.restore import etcd_restore

__all__ = ["client_for", "etcd", "etcd_backup", "etcd_replace_member", "etcd_restore",
           "wait_cluster_healthy"]
