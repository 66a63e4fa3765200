# pyinfra inventory of a lab seed (`metalseed lab up --seed`): the lab's masters, workers,
# datastore machine and tenant worker t1 as inventory/lab.py reads them, with the tenants acme
# (t1 its worker) and globex of group_data/lab-seed.py. The lab is chosen by $METALSEED_LAB
# (default "lab").
#   metalseed lab up --seed
#   pyinfra -y inventory/lab-seed.py deploys/cluster.py --data kubernetes=true
#   pyinfra -y inventory/lab-seed.py deploys/seed.py --data kubernetes=true
#   kubectl --kubeconfig pki/<lab>/tenants/acme/admin.conf get nodes
from metalseed.lab.inventory import load_groups as _load_groups
from metalseed.lab.inventory import require_datastore as _require_datastore

_groups = _require_datastore(_load_groups())
masters = _groups["masters"]
workers = _groups["workers"]
datastore = _groups["datastore"]
tenant_workers = _groups["tenant_workers"]
all = _groups["all"]
