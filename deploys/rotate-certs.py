"""Rotate certificates with zero downtime, one host at a time, health-gated.

    pyinfra INVENTORY deploys/rotate-certs.py                                   leaves that are due
    pyinfra INVENTORY deploys/rotate-certs.py --data rotate=all                 every leaf
    pyinfra INVENTORY deploys/rotate-certs.py --data rotate=etcd/m1/server,apiserver   a chosen set
    pyinfra INVENTORY deploys/rotate-certs.py --data rotate_ca=etcd/ca --data rotate_phase=trust
        CA rotation, phase 1 (then rotate_phase=reissue, then finish: each a run of its own)

A run stopped by a failed health check or a crashed host is resumed by running it again.
"""

from metalseed.deploys.rotation import rotate_certs

rotate_certs()
