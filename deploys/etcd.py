"""etcd on every master: mutual TLS, health-gated.  pyinfra INVENTORY deploys/etcd.py"""

from metalseed.deploys.etcd import etcd

etcd()
