"""A consistent etcd snapshot, fetched to backups/<cluster>/ with its revision and hash.

    pyinfra INVENTORY deploys/etcd-backup.py
    METALSEED_ETCD_BACKUP_RETENTION=14 pyinfra INVENTORY deploys/etcd-backup.py   (default 7)
"""

import os

from metalseed.deploys.etcd import etcd_backup

etcd_backup(retention=int(os.environ.get("METALSEED_ETCD_BACKUP_RETENTION", "7")))
