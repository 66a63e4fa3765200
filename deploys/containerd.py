"""containerd (with runc, the CNI plugins and crictl) on every node, from pinned artifacts.

    pyinfra INVENTORY deploys/containerd.py

With ``mirror_url`` set (the lab inventory sets it), binaries and images come from the mirror;
otherwise binaries are downloaded from the pinned upstream releases.
"""

from metalseed.deploys.containerd import containerd

containerd()
