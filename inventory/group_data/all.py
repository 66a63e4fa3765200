# Defaults shared by every inventory in this folder. Each inventory file is also a group of its
# own (inventory/lab.py -> group "lab"), so group_data/<inventory>.py holds what differs per cluster.
ssh_user = "root"
dns_domain = "cluster.local"
pod_network = "10.244.0.0/16"
service_network = "10.96.0.0/12"
pki_key_algorithm = "ecdsa-p256"
