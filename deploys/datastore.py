"""The tenant datastore: its etcd cluster on the ``datastore`` group (mutual TLS, authentication
on), then every tenant's etcd user and role READWRITE on exactly /<name>/, and for a tenant no
longer in the data: its role revoked, every key under its prefix deleted, its role and user gone.

    pyinfra INVENTORY deploys/datastore.py
"""

from metalseed.deploys.datastore import datastore

datastore()
