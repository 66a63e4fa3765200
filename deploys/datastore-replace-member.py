"""Replace one tenant datastore member that is gone (a dead machine, a lost disk) without losing
quorum, as deploys/etcd-replace-member.py does for the seed's etcd.

    pyinfra INVENTORY deploys/datastore-replace-member.py --data datastore_replace=d2
"""

from metalseed.deploys.datastore import datastore_replace_member

datastore_replace_member()
