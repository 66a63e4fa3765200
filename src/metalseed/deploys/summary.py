"""The last words of ``deploys/cluster.py``: what the operator now has, and what to run next."""

from __future__ import annotations

import sys
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy

from metalseed.deploys.gates import say
from metalseed.model import Cluster, cluster_from_inventory
from metalseed.pki.issue import store_for


def inventory_argument(argv: list[str] | None = None) -> str:
    """The inventory as the operator named it to ``pyinfra`` (its first positional argument)."""
    args = (argv if argv is not None else sys.argv)[1:]
    skip_value = {"--data", "--limit", "--user", "--key", "--port", "--password", "--sudo-user",
                  "--su-user", "--group-data", "--config", "--chdir", "--parallel", "--retry",
                  "--retry-delay", "--shell-executable", "--fail-percent", "--key-password"}
    i = 0
    while i < len(args):
        if args[i] in skip_value:
            i += 2
            continue
        if not args[i].startswith("-"):
            return args[i]
        i += 1
    return "INVENTORY"


def summary_lines(cluster: Cluster, inventory: str, kubeconfig: Path | None = None) -> list[str]:
    """Pure: the summary a run ends with."""
    port = cluster.edge.https_port
    url = f"https://{cluster.vip}{'' if port == 443 else f':{port}'}/"
    if cluster.edge.cert_file is not None:
        ca = f"the CA of your own certificate ({cluster.edge.cert_file})"
        curl = f"curl {url}"
    else:
        ca = str(store_for(cluster).root / "edge" / "ca-bundle.crt")
        curl = f"curl --cacert {ca} {url}"
    lines = [
        f"metalseed: cluster {cluster.name!r} is converged "
        f"({len(cluster.masters)} master(s), {len(cluster.workers)} worker(s))",
        f"  edge (VIP):  {url}  (HTTP on port {cluster.edge.http_port} redirects to it)",
        f"  edge CA:     {ca}: hand it to the edge's clients",
    ]
    if kubeconfig is not None:
        lines.append(f"  API:         https://{cluster.vip}:{cluster.apiserver_port}  "
                     f"(kubectl --kubeconfig {kubeconfig})")
    if cluster.datastore is not None:
        root = store_for(cluster).root
        lines.append(f"  datastore:   {','.join(cluster.datastore.client_urls())}  (CA "
                     f"{root / 'datastore' / 'ca-bundle.crt'}; {len(cluster.tenants)} tenant(s), "
                     "each READWRITE on /<name>/ only)")
    lines += [
        f"  next:        metalseed certs check {inventory}     (installed certificates, expiry)",
        f"               {curl}",
    ]
    return lines


@deploy("metalseed: summary")
def summary() -> None:
    cluster = cluster_from_inventory(host.inventory)
    inventory = inventory_argument()
    kubeconfig = (store_for(cluster).root / "kubeconfig" / "admin.conf"
                  if cluster.kubernetes.enabled else None)
    say(name="What you have", lines=lambda: summary_lines(cluster, inventory, kubeconfig),
        _run_once=True)
