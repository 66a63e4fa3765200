"""The HA edge: keepalived VIP + nginx TLS termination on the masters.

    pyinfra INVENTORY deploys/edge.py

In the lab (the inventory's ``lab`` group) the workers also get the LAB STAND-IN for the ingress
controller, since the lab runs no Kubernetes.
"""

from pyinfra import host

from metalseed.deploys.edge import edge
from metalseed.deploys.standin import lab_ingress_standin

edge()
if "lab" in host.groups:
    lab_ingress_standin()
