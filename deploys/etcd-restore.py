"""Rebuild etcd from a snapshot after quorum is lost (refused while a quorum is healthy).

    pyinfra INVENTORY deploys/etcd-restore.py                       (newest in backups/<cluster>/)
    METALSEED_ETCD_SNAPSHOT=backups/prod/prod-...db pyinfra INVENTORY deploys/etcd-restore.py
    METALSEED_ETCD_RESTORE_FORCE=1 ...                               (even with a healthy quorum)
"""

import os

from metalseed.deploys.etcd import etcd_restore

etcd_restore(snapshot=os.environ.get("METALSEED_ETCD_SNAPSHOT") or None,
             force=os.environ.get("METALSEED_ETCD_RESTORE_FORCE") == "1")
