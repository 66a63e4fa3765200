# A production-shaped inventory: three masters, two workers on one node network.
# Cluster-wide settings live in group_data/example.py (this file's own group) and group_data/all.py.
masters = [
    ("master-1", {"ssh_hostname": "10.20.0.11"}),
    ("master-2", {"ssh_hostname": "10.20.0.12"}),
    ("master-3", {"ssh_hostname": "10.20.0.13"}),
]
workers = [
    ("worker-1", {"ssh_hostname": "10.20.0.21"}),
    ("worker-2", {"ssh_hostname": "10.20.0.22"}),
]
