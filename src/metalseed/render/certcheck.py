"""The on-host certificate check: a script, a service and a timer, as pure text.

Masters run it daily (and shortly after boot). It needs nothing but openssl and coreutils on the
host, logs one line per certificate to the journal (warnings for due ones, errors for expired ones),
and exits non-zero when anything is due, so ``systemctl --failed`` and any unit-state monitoring
show it well before a certificate expires.
"""

from __future__ import annotations

import shlex

from metalseed.model import Cluster
from metalseed.pki.installed import SCAN_DIRS

SCRIPT_PATH = "/usr/local/sbin/metalseed-certcheck"
SERVICE_NAME = "metalseed-certcheck.service"
TIMER_NAME = "metalseed-certcheck.timer"
SERVICE_PATH = f"/etc/systemd/system/{SERVICE_NAME}"
TIMER_PATH = f"/etc/systemd/system/{TIMER_NAME}"


def render_script(cluster: Cluster) -> str:
    window = int(cluster.pki.renew_before.total_seconds())
    # The fraction is applied in integer arithmetic: due once elapsed * den > lifetime * num.
    num, den = 2, 3
    dirs = " ".join(shlex.quote(d) for d in SCAN_DIRS)
    return f"""#!/bin/sh
# metalseed certificate check (generated; edits are overwritten by the next deploy).
# A certificate is due when it expires within {window} s or has used {num}/{den} of its lifetime.
set -u
now=$(date +%s)
due=0
total=0
for d in {dirs}; do
  [ -d "$d" ] || continue
  for f in $(find "$d" -type f \\( -name '*.crt' -o -name '*.pem' \\) ! -name '*key*' | sort); do
    end=$(openssl x509 -noout -enddate -in "$f" 2>/dev/null | cut -d= -f2) || end=""
    start=$(openssl x509 -noout -startdate -in "$f" 2>/dev/null | cut -d= -f2) || start=""
    if [ -z "$end" ] || [ -z "$start" ]; then
      logger -t metalseed-certcheck -p user.err "$f: unreadable certificate"
      echo "INVALID $f"; due=$((due + 1)); continue
    fi
    total=$((total + 1))
    na=$(date -d "$end" +%s); nb=$(date -d "$start" +%s)
    left=$((na - now))
    subject=$(openssl x509 -noout -subject -nameopt RFC2253 -in "$f" | sed 's/^subject=//')
    if [ "$left" -le 0 ]; then
      logger -t metalseed-certcheck -p user.err "$f ($subject): EXPIRED at $end"
      echo "EXPIRED $f $end"; due=$((due + 1))
    elif [ "$left" -lt {window} ] || [ $(( (now - nb) * {den} )) -gt $(( (na - nb) * {num} )) ]; then
      logger -t metalseed-certcheck -p user.warning "$f ($subject): due, expires $end"
      echo "DUE $f $end"; due=$((due + 1))
    else
      echo "OK $f $end"
    fi
  done
done
logger -t metalseed-certcheck -p user.info "$total certificate(s) checked, $due need attention"
[ "$due" -eq 0 ]
"""


def render_service() -> str:
    return f"""[Unit]
Description=metalseed: check installed certificates for expiry

[Service]
Type=oneshot
ExecStart={SCRIPT_PATH}
"""


def render_timer() -> str:
    return f"""[Unit]
Description=metalseed: daily certificate expiry check

[Timer]
OnBootSec=5min
OnCalendar=daily
RandomizedDelaySec=15min
Persistent=true
Unit={SERVICE_NAME}

[Install]
WantedBy=timers.target
"""
