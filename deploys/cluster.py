"""The whole cluster, in order: etcd, the HA edge, the certificate expiry timer, and Kubernetes
where ``kubernetes = True`` (control plane, nodes, flannel, CoreDNS, the ingress controller on the
workers' NodePort), the tenant datastore where there is a ``datastore`` group; it ends with a
summary of what you have (the VIP's URL, the edge CA, the kubeconfig) and what to run next.

    pyinfra INVENTORY deploys/cluster.py

The PKI store is converged first (``metalseed pki init`` does the same by hand).
"""

from pyinfra import host

from metalseed.deploys.certcheck import certcheck
from metalseed.deploys.datastore import datastore
from metalseed.deploys.edge import edge
from metalseed.deploys.etcd import etcd
from metalseed.deploys.kubernetes import kubernetes
from metalseed.deploys.summary import summary
from metalseed.model import cluster_from_inventory

_cluster = cluster_from_inventory(host.inventory)
# Datastore members are no Kubernetes nodes; tenant workers join their tenant (deploys/seed.py).
if not _cluster.is_datastore_host(host.name) and not _cluster.is_tenant_worker_host(host.name):
    etcd()
    edge()
    certcheck()
    if _cluster.kubernetes.enabled:  # the same on every host
        kubernetes()
datastore()  # where the inventory has a datastore group: its etcd and tenants' access
summary()
