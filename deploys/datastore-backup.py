"""A consistent snapshot of the tenant datastore, fetched to <etcd_backup_dir>/<seed>/datastore/
with its revision, hash and key count (as deploys/etcd-backup.py does for the seed's etcd).

    pyinfra INVENTORY deploys/datastore-backup.py
    pyinfra INVENTORY deploys/datastore-backup.py --data etcd_backup_retention=14     (default 7)
"""

from metalseed.deploys.datastore import datastore_backup

datastore_backup()
