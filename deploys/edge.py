"""The HA edge: keepalived VIP + nginx TLS termination on the masters, proxying to the ingress
NodePort on the workers (whatever controller answers there).

    pyinfra INVENTORY deploys/edge.py
"""

from metalseed.deploys.edge import edge

edge()
