"""The official kubernetes client, built from the store's admin kubeconfig (server: the VIP), and
the waits every deploy shares. Every ApiException is translated into KubernetesError here.

Waits poll real conditions with a deadline; a timeout names the object and the condition that did
not come, with the last thing the API said about it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from metalseed.errors import HealthCheckError, KubernetesError
from metalseed.model import Cluster
from metalseed.pki.issue import store_for

T = TypeVar("T")
POLL = 1.0
REQUEST_TIMEOUT = 10.0


def admin_kubeconfig(cluster: Cluster) -> Path:
    return store_for(cluster).root / "kubeconfig" / "admin.conf"


# TCP keepalive on every connection to the VIP: probed after 1 s without a byte, dropped when 2
# probes 1 s apart go unanswered. A connection the crashed VIP holder took with it answers
# nothing, and a request waiting on it (a watch, or a response the dead holder owed) would wait
# for its read timeout; a probe reaches the new holder, whose RST ends it at once. A slow API
# server does not trip it: its kernel answers the probes. (client-go idles 30 s first.)
KEEPALIVE = {"idle": 1, "interval": 1, "count": 2}


def api_client(cluster: Cluster, kubeconfig: Path | None = None) -> Any:
    """A client of the seed's API with the store's admin kubeconfig, or of whatever API
    ``kubeconfig`` names (a tenant's admin.conf), with the same keepalive."""
    from kubernetes.client import Configuration
    from kubernetes.config import new_client_from_config
    from kubernetes.utils.keepalive import tcp_keepalive_socket_options

    path = kubeconfig or admin_kubeconfig(cluster)
    if not path.is_file():
        raise KubernetesError(f"no admin kubeconfig at {path} (run `metalseed pki init INVENTORY`)")
    conf = Configuration()
    conf.socket_options = tcp_keepalive_socket_options(**KEEPALIVE)
    return new_client_from_config(config_file=str(path), client_configuration=conf)


def dynamic(api: Any) -> Any:
    from kubernetes.dynamic import DynamicClient

    return translated("API discovery", lambda: DynamicClient(api))


def translated(what: str, fn: Callable[[], T]) -> T:
    """``fn()``, with the client's errors (API refusals, connection failures) as KubernetesError."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.dynamic.exceptions import DynamicApiError
    from urllib3.exceptions import HTTPError

    try:
        return fn()
    except (ApiException, DynamicApiError) as e:
        status = getattr(e, "status", "?")
        reason = getattr(e, "reason", "") or ""
        body = getattr(e, "body", "") or ""
        if isinstance(body, bytes):
            body = body.decode(errors="replace")
        raise KubernetesError(f"{what}: the API answered {status} {reason}: {str(body)[:300]}") from e
    except (HTTPError, OSError) as e:
        raise KubernetesError(f"{what}: {type(e).__name__}: {e}") from e


def readyz(api: Any) -> str | None:
    """None when /readyz answers ok, else what was seen."""
    try:
        request = api.param_serialize("GET", "/readyz", auth_settings=["BearerToken"])
        response = api.call_api(*request, _request_timeout=REQUEST_TIMEOUT)
        response.read()
        text = (response.data or b"").decode(errors="replace").strip()
        if response.status == 200 and text == "ok":
            return None
        # A verbose answer lists every check; the failing ones ("[-]...") say why.
        failing = [line for line in text.splitlines() if line.startswith("[-]")]
        return f"{response.status} {' '.join(failing) if failing else text[:200]}"
    except Exception as e:  # any failure to connect is "not ready yet" here
        return f"{type(e).__name__}: {e}"


def wait_api(cluster: Cluster, timeout: float) -> None:
    """Until the API answers /readyz through the VIP (nginx's pass-through to the masters)."""
    api = api_client(cluster)
    deadline = time.monotonic() + timeout
    seen: str | None = "nothing yet"
    while time.monotonic() < deadline:
        seen = readyz(api)
        if seen is None:
            return
        time.sleep(POLL)
    raise HealthCheckError(f"kubernetes: the API at https://{cluster.vip}:{cluster.apiserver_port} "
                           f"did not answer /readyz within {timeout:.0f}s (last: {seen})")


def wait_for(what: str, condition: str, check: Callable[[], str | None], timeout: float,
             explain: Callable[[], str] | None = None) -> None:
    """Poll ``check`` (None: the condition holds; else what it saw) until ``timeout``; on a
    timeout ``explain`` (read once, not on every poll) adds why to the error."""
    deadline = time.monotonic() + timeout
    seen: str | None = "nothing yet"
    while True:
        try:
            seen = check()
        except KubernetesError as e:
            seen = str(e)
        if seen is None:
            return
        if time.monotonic() >= deadline:
            why = f"; {explain()}" if explain is not None else ""
            raise HealthCheckError(f"kubernetes: {what}: {condition} did not come within "
                                   f"{timeout:.0f}s (last: {seen}{why})")
        time.sleep(POLL)


def condition(obj: Any, kind: str) -> tuple[str, str] | None:
    """(status, message) of the condition ``kind`` of an object, or None."""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return str(c.get("status")), str(c.get("message") or c.get("reason") or "")
    return None
