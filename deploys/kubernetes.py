"""Kubernetes on the foundation (after etcd and the edge): the control plane on the masters,
containerd, kubelet, kube-proxy and flannel on every node, CoreDNS.

    pyinfra INVENTORY deploys/kubernetes.py

Needs kubernetes = True, an etcd of 3.5.11 or newer (etcd_source = 'mirror' or 'tarball') and
mirror_url (the lab inventory sets it).
"""

from metalseed.deploys.kubernetes import kubernetes

kubernetes()
