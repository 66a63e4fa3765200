"""Rebuild etcd from a snapshot after quorum is lost (refused while a quorum is healthy).

    pyinfra INVENTORY deploys/etcd-restore.py                  (the newest in <etcd_backup_dir>/<cluster>/)
    pyinfra INVENTORY deploys/etcd-restore.py --data etcd_snapshot=backups/prod/prod-...db
    pyinfra INVENTORY deploys/etcd-restore.py --data etcd_restore_force=true   (even with a quorum)
"""

from metalseed.deploys.etcd import etcd_restore

etcd_restore()
