# pyinfra inventory of the Vagrant lab (vagrant/Vagrantfile): the same topology as VMs.
#   pyinfra -y inventory/vagrant.py deploys/cluster.py
# The private network is eth1 in the VMs (eth0 is the provider's NAT/management network).
from pathlib import Path as _Path

_NETWORK = "192.168.56"
_VAGRANT_DIR = _Path(__file__).resolve().parent.parent / "vagrant" / ".vagrant" / "machines"


def _host(name: str, host: int) -> tuple[str, dict]:
    # `vagrant up` writes one key per machine and provider; take whichever provider was used.
    keys = sorted(_VAGRANT_DIR.glob(f"{name}/*/private_key"))
    key = keys[0] if keys else _VAGRANT_DIR / name / "virtualbox" / "private_key"
    return (
        name,
        {
            "ssh_hostname": f"{_NETWORK}.{host}",
            "ssh_user": "root",
            "ssh_key": str(key),
            "ssh_known_hosts_file": "/dev/null",
            "ssh_strict_host_key_checking": "no",
        },
    )


masters = [_host("m1", 11), _host("m2", 12), _host("m3", 13)]
workers = [_host("w1", 21), _host("w2", 22)]
all = (
    [name for name, _ in masters + workers],
    {
        "cluster_name": "vagrant",
        "node_network": f"{_NETWORK}.0/24",
        "vip": f"{_NETWORK}.250",
        "vip_interface": "eth1",
    },
)
