# pyinfra inventory of a lab seed (`metalseed lab up --seed`): the lab's masters, workers and
# datastore machine as inventory/lab.py reads them, with the tenants acme and globex of
# group_data/lab-seed.py. The lab is chosen by $METALSEED_LAB (default "lab").
#   metalseed lab up --seed
#   pyinfra -y inventory/lab-seed.py deploys/cluster.py --data kubernetes=true
#   pyinfra -y inventory/lab-seed.py deploys/seed.py --data kubernetes=true
#   kubectl --kubeconfig pki/<lab>/tenants/acme/admin.conf get ns
# Tenant workers (nodes that join a tenant's control plane) are not built yet: the lab boots none.
from metalseed.lab.inventory import load_groups as _load_groups
from metalseed.lab.inventory import require_datastore as _require_datastore

_groups = _require_datastore(_load_groups())
masters = _groups["masters"]
workers = _groups["workers"]
datastore = _groups["datastore"]
all = _groups["all"]
