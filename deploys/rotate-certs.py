"""Rotate certificates with zero downtime, one host at a time, health-gated.

    pyinfra INVENTORY deploys/rotate-certs.py                          leaves that are due
    METALSEED_ROTATE=all pyinfra INVENTORY deploys/rotate-certs.py     every leaf
    METALSEED_ROTATE=etcd/m1/server,apiserver pyinfra ...              a chosen set
    METALSEED_ROTATE_CA=etcd/ca METALSEED_ROTATE_PHASE=trust pyinfra ...   CA rotation, phase 1
        (then METALSEED_ROTATE_PHASE=reissue, then finish: each a run of its own)

A run stopped by a failed health check or a crashed host is resumed by running it again.
"""

import os

from metalseed.deploys.rotation import rotate_certs

rotate_certs(
    leaves=os.environ.get("METALSEED_ROTATE", "due"),
    ca=os.environ.get("METALSEED_ROTATE_CA") or None,
    phase=os.environ.get("METALSEED_ROTATE_PHASE") or None,
)
