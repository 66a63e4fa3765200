"""Tenant control planes on a seed (after deploys/cluster.py built it): the tenants of the
inventory's ``tenants`` data, each in its namespace tenant-<name> with its own PKI, its datastore
prefix and its SNI route on the edge; ends when every tenant's API answers through the edge.

    pyinfra INVENTORY deploys/seed.py
"""

from metalseed.deploys.seed import seed

seed()
