"""The whole cluster foundation, in order: etcd, the HA edge, the certificate expiry timer; it
ends with a summary of what you have (the VIP's URL, the edge CA) and what to run next.

    pyinfra INVENTORY deploys/cluster.py

The PKI store is converged first (``metalseed pki init`` does the same by hand); in the lab
(the inventory's ``lab`` group) the workers also get the LAB STAND-IN for the ingress controller.
"""

from pyinfra import host

from metalseed.deploys.certcheck import certcheck
from metalseed.deploys.edge import edge
from metalseed.deploys.etcd import etcd
from metalseed.deploys.standin import lab_ingress_standin
from metalseed.deploys.summary import summary

etcd()
edge()
certcheck()
if "lab" in host.groups:
    lab_ingress_standin()
summary()
