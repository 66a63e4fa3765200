"""A consistent etcd snapshot, fetched to <etcd_backup_dir>/<cluster>/ with its revision and hash.

    pyinfra INVENTORY deploys/etcd-backup.py
    pyinfra INVENTORY deploys/etcd-backup.py --data etcd_backup_retention=14     (default 7)
"""

from metalseed.deploys.etcd import etcd_backup

etcd_backup()
