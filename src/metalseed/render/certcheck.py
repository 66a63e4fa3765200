"""The on-host certificate check: a script, a service and a timer, as pure text.

Masters run it daily (and shortly after boot), and so does every node of a cluster with
Kubernetes (each holds its kubelet's certificates and kubeconfigs). It needs nothing but openssl
and coreutils on the host, reads the certificates embedded in kubeconfigs too, logs one line per
certificate to the journal (warnings for due ones, errors for expired ones), and exits non-zero
when anything is due, so ``systemctl --failed`` and any unit-state monitoring show it well before
a certificate expires.
"""

from __future__ import annotations

import shlex
from fractions import Fraction

from metalseed.model import Cluster
from metalseed.pki.installed import KUBECONFIG_DIRS, KUBECONFIG_FIELDS, SCAN_DIRS
from metalseed.render.templates import render

SCRIPT_PATH = "/usr/local/sbin/metalseed-certcheck"
SERVICE_NAME = "metalseed-certcheck.service"
TIMER_NAME = "metalseed-certcheck.timer"
SERVICE_PATH = f"/etc/systemd/system/{SERVICE_NAME}"
TIMER_PATH = f"/etc/systemd/system/{TIMER_NAME}"


def render_script(cluster: Cluster) -> str:
    # sh has integers only: the model's renew_fraction as numerator and denominator.
    fraction = Fraction(cluster.pki.renew_fraction).limit_denominator(1000)
    return render(
        "certcheck/metalseed-certcheck.j2",
        window=int(cluster.pki.renew_before.total_seconds()),
        num=fraction.numerator,
        den=fraction.denominator,
        dirs=" ".join(shlex.quote(d) for d in SCAN_DIRS),
        kubeconfig_dirs=" ".join(shlex.quote(d) for d in KUBECONFIG_DIRS),
        kubeconfig_fields=" ".join(KUBECONFIG_FIELDS),
    )


def render_service() -> str:
    return render("certcheck/metalseed-certcheck.service.j2", script_path=SCRIPT_PATH)


def render_timer() -> str:
    return render("certcheck/metalseed-certcheck.timer.j2", service_name=SERVICE_NAME)
