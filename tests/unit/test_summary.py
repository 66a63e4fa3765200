"""The summary deploys/cluster.py ends with."""

from __future__ import annotations

from pathlib import Path

from metalseed.deploys.summary import summary_lines
from metalseed.model import Cluster, _HostInput, build_cluster


def cluster(**data: object) -> Cluster:
    base = {"cluster_name": "prod", "node_network": "10.20.0.0/24", "vip": "10.20.0.10", **data}
    return build_cluster([_HostInput("m1", ("masters",), {**base, "ssh_hostname": "10.20.0.11"}),
                          _HostInput("w1", ("workers",), {**base, "ssh_hostname": "10.20.0.21"})])


def test_the_summary_names_the_vip_the_edge_ca_and_the_next_commands() -> None:
    lines = summary_lines(cluster(), "inventory/prod.py")
    text = "\n".join(lines)
    assert "cluster 'prod' is converged (1 master(s), 1 worker(s))" in lines[0]
    assert "https://10.20.0.10/" in text
    assert "pki/prod/edge/ca-bundle.crt" in text
    assert "metalseed certs check inventory/prod.py" in text
    assert "curl --cacert pki/prod/edge/ca-bundle.crt https://10.20.0.10/" in text
    assert "kubectl" not in text  # no kubeconfig until there is an API server


def test_other_ports_own_certificates_and_a_kubeconfig() -> None:
    c = cluster(edge_https_port=8443, edge_cert_file="/etc/own.crt", edge_key_file="/etc/own.key")
    text = "\n".join(summary_lines(c, "inv.py", Path("pki/prod/kubeconfig/admin.conf")))
    assert "https://10.20.0.10:8443/" in text and "/etc/own.crt" in text
    assert "kubectl --kubeconfig pki/prod/kubeconfig/admin.conf" in text


def test_a_datastore_is_named_with_its_endpoints_and_ca() -> None:
    base = {"cluster_name": "prod", "node_network": "10.20.0.0/24", "vip": "10.20.0.10"}
    c = build_cluster([_HostInput("m1", ("masters",), {**base, "ssh_hostname": "10.20.0.11"}),
                       _HostInput("d1", ("datastore",), {**base, "ssh_hostname": "10.20.0.51"})])
    text = "\n".join(summary_lines(c, "inv.py"))
    assert "datastore:   https://10.20.0.51:2379" in text
    assert "pki/prod/datastore/ca-bundle.crt" in text
    assert "datastore" not in "\n".join(summary_lines(cluster(), "inv.py"))
