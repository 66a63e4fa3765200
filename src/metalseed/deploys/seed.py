"""A seed's tenant control planes, after ``deploys/cluster.py`` built the seed (``kubernetes =
True``, the ``tenants`` data, the tenant datastore):

1. offline, before any host is touched: the model (every tenant spec), every tenant object
   against the pinned Kubernetes' schemas, the mirror's control plane images of each tenant's
   version;
2. the PKI store, tenants included (``pki/<seed>/tenants/<name>/``);
3. the edge on the masters: the same deploy and file as cluster.py's, which routes each tenant's
   endpoint name by SNI (nothing changes when cluster.py already shipped it);
4. the datastore's users and roles matching the tenants (:mod:`metalseed.deploys.datastore`: a
   removed tenant's role revoked, its keys deleted, its role and user gone);
5. the namespace of each tenant no longer in the data deleted (its pods, Secret, Service with it;
   its SNI route is gone from the edge with it from the data), its PKI directory then moved out of
   the live store to ``pki/<seed>.archive/tenants/<name>-<UTC time>/``;
6. each tenant's Namespace, PKI Secret, control plane Deployment, Service and PDB, server-side
   applied on the seed where a dry run says anything would change;
7. tenant isolation (:mod:`metalseed.tenants.enforce`): each tenant namespace's policies (its
   CiliumNetworkPolicies for the Cilium agents cluster.py runs on every seed node; with
   kube-router, its DaemonSet and NetworkPolicies) and probe pod;
8. a wait on real conditions: each Deployment rolled out and each tenant's API answering
   ``/readyz`` through the edge with its own admin.conf; each probe pod (and kube-router on
   every node);
9. each tenant's workers (:mod:`metalseed.deploys.tenant_workers`): flanneld's RBAC and the
   ``kubernetes`` Service's endpoint (the edge) in the tenant's cluster, then on every tenant
   worker kubelet, kube-proxy and flanneld with the tenant's PKI, joining through the edge; a
   wait until each is Ready in its tenant's API;
10. the probe matrix (``metalseed tenants verify``): every allowed path connects (a tenant's
    own workers' kubelets among them), every forbidden one does not, or the deploy fails with
    the table.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from metalseed.deploys import tenant_workers as tw
from metalseed.deploys.datastore import TENANT_ACCESS_OP, tenant_access
from metalseed.deploys.edge import edge
from metalseed.deploys.gates import gate, shared
from metalseed.errors import DeployError
from metalseed.model import cluster_from_inventory
from metalseed.pki.issue import ensure_store
from metalseed.tenants import apply as ta
from metalseed.tenants import enforce


@deploy("metalseed seed: tenant control planes")
def seed() -> None:
    cluster = cluster_from_inventory(host.inventory)
    if not cluster.kubernetes.enabled:
        raise DeployError("seed: a seed is a Kubernetes cluster: set kubernetes = True and run "
                          "deploys/cluster.py first")
    if cluster.tenants and cluster.datastore is None:
        raise DeployError("seed: tenants need the tenant datastore: a 'datastore' group of 1, 3 "
                          "or 5 hosts in the inventory")
    shared(host.state, "tenant objects valid", lambda: ta.validate(cluster))
    shared(host.state, "isolation objects valid", lambda: enforce.validate(cluster))
    shared(host.state, "tenant worker objects valid", lambda: tw.validate(cluster))
    ensure_store(cluster, host.inventory)
    # Datastore members and tenant workers are no seed nodes: no edge there.
    if not cluster.is_datastore_host(host.name) and not cluster.is_tenant_worker_host(host.name):
        edge()
    # Before any control plane starts: its etcd user and role must exist. For a tenant gone
    # from the data this revokes its role first, so nothing writes under its prefix again.
    if cluster.datastore is not None:
        tenant_access(name=TENANT_ACCESS_OP, cluster=cluster, _run_once=True)
    ta.delete_removed(name=ta.DELETE_OP, cluster=cluster, _run_once=True)
    ta.apply_tenants(name=ta.APPLY_OP, cluster=cluster, _run_once=True)
    enforce.apply_isolation(name=enforce.APPLY_OP, cluster=cluster, _run_once=True)
    gate(name=ta.WAIT_OP, description="tenants", check=lambda: ta.wait_ready(cluster),
         _run_once=True)
    gate(name=enforce.WAIT_OP, description="isolation", check=lambda: enforce.wait_engine(cluster),
         _run_once=True)
    tw.apply_worker_objects(name=tw.OBJECTS_OP, cluster=cluster, _run_once=True)
    if cluster.is_tenant_worker_host(host.name):
        tw.tenant_worker()
    gate(name=tw.WAIT_OP, description="tenant workers",
         check=lambda: tw.wait_workers_ready(cluster), _run_once=True)
    # Last: the matrix probes each tenant's own workers' kubelets too.
    enforce.verify_isolation(name=enforce.VERIFY_OP, cluster=cluster, _run_once=True)
