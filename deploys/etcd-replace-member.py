"""Replace a dead etcd member by the machine the inventory now gives it, without losing quorum.

    METALSEED_ETCD_REPLACE=master-2 pyinfra INVENTORY deploys/etcd-replace-member.py
"""

import os

from metalseed.deploys.etcd import etcd_replace_member
from metalseed.errors import DeployError

name = os.environ.get("METALSEED_ETCD_REPLACE")
if not name:
    raise DeployError("name the member to replace: METALSEED_ETCD_REPLACE=<master name>")
etcd_replace_member(member_name=name)
