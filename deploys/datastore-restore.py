"""Rebuild the tenant datastore from a snapshot (deploys/datastore-backup.py's), then bring its
users and roles back in line with the tenants of the data.

    pyinfra INVENTORY deploys/datastore-restore.py                      the newest snapshot
    pyinfra INVENTORY deploys/datastore-restore.py --data etcd_snapshot=PATH
    ... --data etcd_restore_force=true        even while a quorum is healthy (loses newer writes)
"""

from metalseed.deploys.datastore import datastore_restore

datastore_restore()
