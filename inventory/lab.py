# pyinfra inventory of the local lab (`metalseed lab up`): masters m1.., workers w1.., and with
# `metalseed lab up --datastore 1` the tenant datastore's d1.. (group datastore), with
# `--tenant-workers 1` the tenant workers t1.. (group tenant_workers: nodes of a tenant's cluster)
# The lab is chosen by $METALSEED_LAB (default "lab"); its state file gives addresses and key.
#   pyinfra -y inventory/lab.py deploys/cluster.py
#   METALSEED_LAB=test pyinfra -y inventory/lab.py exec -- hostname
# Cluster data (cluster_name = lab name, node_network, vip, vip_interface) comes from the lab;
# group_data/all.py adds the shared defaults.
from metalseed.lab.inventory import load_groups as _load_groups

_groups = _load_groups()
masters = _groups["masters"]
workers = _groups["workers"]
if "datastore" in _groups:
    datastore = _groups["datastore"]
if "tenant_workers" in _groups:
    tenant_workers = _groups["tenant_workers"]
all = _groups["all"]
