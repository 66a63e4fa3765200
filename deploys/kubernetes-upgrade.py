"""Upgrade a running cluster's Kubernetes to kubernetes_version, one minor version at a time:
masters one at a time behind /readyz, then every node drained, upgraded and uncordoned in turn.

    pyinfra INVENTORY deploys/kubernetes-upgrade.py --data kubernetes_version=v1.36.3

A downgrade or a skipped minor is refused before any host is touched; a rerun at the target
changes nothing.
"""

from metalseed.deploys.upgrade import kubernetes_upgrade

kubernetes_upgrade()
