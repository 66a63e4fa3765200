cluster_name = "example"
node_network = "10.20.0.0/24"
vip = "10.20.0.10"
vip_interface = "eth0"
