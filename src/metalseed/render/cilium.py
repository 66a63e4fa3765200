"""The Cilium agent on a seed's nodes, as pure functions: its systemd unit and the CNI chain.

Cilium runs chained over flannel (``generic-veth``): flannel still gives each pod its address and
routes between nodes, as on every metalseed cluster, and the agent attaches its programs to each
pod's veth, where it enforces CiliumNetworkPolicies (L3/L4; no L7 proxy, no Envoy). kube-proxy
keeps serving Services: no socket load balancing, no kube-proxy replacement.

Like kubelet, kube-proxy and flanneld, the agent is a systemd unit, not a DaemonSet: the API
servers refuse privileged pods, the agent needs the node's bpffs, cgroups and network as root, and
the node's pods wait for it (the CNI chain asks the agent for every new pod). It compiles its
datapath at start with Debian's clang-19 from the sources the mirror ships beside it
(``cilium-bpf.tar``, unpacked into the agent's lib dir before each start).

Without the operator (it does not build from the module proxy here): IPAM is ``kubernetes`` (the
node's podCIDR, which flannel uses too; the agent takes no pod address from it, since flannel
does the pods, only its own router address, given explicitly so it never collides with flannel's
cni0 or flannel.1), identities are CiliumIdentity objects the agents create, and nothing garbage
collects identities or endpoints of deleted pods (a seed's churn is small; the README says so).
"""

from __future__ import annotations

import json
from ipaddress import IPv4Network
from typing import Any

from metalseed.model import Cluster, Node
from metalseed.render.containerd import CNI_BIN_DIR
from metalseed.render.kubernetes import BIN_DIR, ETC, KUBELET_UNIT, Binary, unit

AGENT = f"{BIN_DIR}/cilium-agent"
CNI_PLUGIN = f"{CNI_BIN_DIR}/cilium-cni"
LIB_DIR = "/var/lib/cilium"
BPF_TAR_DIR = "/usr/local/lib/cilium"
BPF_TAR = f"{BPF_TAR_DIR}/cilium-bpf.tar"
DIR = f"{ETC}/cilium"
KUBECONFIG = f"{DIR}/kubeconfig"
UNIT = "cilium-agent.service"
HEALTH_PORT = 9879
CHAINING_MODE = "generic-veth"
LLVM_BIN = "/usr/lib/llvm-19/bin"
"""Debian's clang-19 and llc-19 under their plain names, which the agent runs."""
PATH = f"{LLVM_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ROUTER_NETWORK = IPv4Network("169.254.0.0/16")
"""Where each node's ``cilium_host`` address comes from (link-local, never routed): the agent
wants a router address, and one out of the podCIDR could be the address flannel gives a pod."""
DOCS = "https://docs.cilium.io/en/v1.20/cmdref/cilium-agent/"


def router_address(cluster: Cluster, node: Node) -> str:
    """A link-local address per node, derived from its index among the nodes (stable)."""
    index = [n.name for n in cluster.nodes].index(node.name)
    return str(ROUTER_NETWORK.network_address + 256 * 23 + 1 + index)


def agent_flags(cluster: Cluster, node: Node) -> list[str]:
    return [
        f"--k8s-kubeconfig-path={KUBECONFIG}",
        f"--lib-dir={LIB_DIR}",
        f"--cni-chaining-mode={CHAINING_MODE}",
        # The chain is ours (files/kubernetes/10-flannel.conflist.j2): the agent neither writes
        # nor removes CNI configurations.
        "--cni-exclusive=false",
        "--write-cni-conf-when-ready=",
        "--routing-mode=native",
        f"--ipv4-native-routing-cidr={cluster.pod_network}",
        "--enable-ipv4=true",
        "--enable-ipv6=false",
        "--enable-ipv4-masquerade=false",
        "--enable-bpf-masquerade=false",
        "--ipam=kubernetes",
        f"--local-router-ipv4={router_address(cluster, node)}",
        # flannel routes the node's podCIDR to cni0; a route of the agent's would take it over.
        "--enable-local-node-route=false",
        # Auto-detected devices get the agent's host programs; flannel's vxlan device would
        # qualify (it has the other nodes' pod routes) and is flannel's to handle, as its bridge is.
        "--devices=!flannel.1,!cni0",
        "--force-device-detection=true",
        "--kube-proxy-replacement=false",
        "--bpf-lb-sock=false",
        "--enable-l7-proxy=false",
        "--enable-envoy-config=false",
        "--enable-hubble=false",
        "--identity-allocation-mode=crd",
        "--enable-endpoint-health-checking=false",
        "--enable-health-checking=false",
        "--enable-policy=default",
        f"--agent-health-port={HEALTH_PORT}",
    ]


def agent_unit(cluster: Cluster, node: Node, agent: Binary, bpf_sha256: str) -> str:
    # The sources are unpacked afresh at each start; the tarball's digest in the line makes a
    # new tarball a change of this file, so the agent restarts onto it.
    unpack = (f"/bin/sh -c 'rm -rf {LIB_DIR}/bpf && mkdir -p {LIB_DIR} && "
              f"tar -xf {BPF_TAR} -C {LIB_DIR} && "
              f"echo {bpf_sha256} > {LIB_DIR}/bpf/.metalseed-sha256'")
    return unit("cilium-agent", f"Cilium agent (chained over flannel) on {node.name}", agent,
                agent_flags(cluster, node), after=("network-online.target", KUBELET_UNIT),
                environment=(f"PATH={PATH}", f"K8S_NODE_NAME={node.name}",
                             "CILIUM_K8S_NAMESPACE=kube-system"),
                exec_start_pre=(unpack,), documentation=DOCS)


def cni_plugin() -> dict[str, Any]:
    """The last link of the node's CNI chain (after flannel and portmap)."""
    return {"type": "cilium-cni", "chaining-mode": CHAINING_MODE}


def cni_plugin_json() -> str:
    return json.dumps(cni_plugin())
