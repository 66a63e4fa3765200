"""Replace a dead etcd member by the machine the inventory now gives it, without losing quorum.

    pyinfra INVENTORY deploys/etcd-replace-member.py --data etcd_replace=master-2
"""

from metalseed.deploys.etcd import etcd_replace_member

etcd_replace_member()
