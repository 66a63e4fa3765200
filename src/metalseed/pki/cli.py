"""``metalseed pki init|show`` and ``metalseed certs check``."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from metalseed.errors import ModelError
from metalseed.model import Cluster, load_cluster
from metalseed.pki.issue import init_pki, store_for, utcnow
from metalseed.pki.plan import BAD_FOR_CHECK, EXPIRED, INVALID, MISSING, OK, Inventory, Status, inspect


def _add_inventory(p: argparse.ArgumentParser) -> None:
    p.add_argument("inventory", help="pyinfra inventory file, e.g. inventory/lab.py")
    p.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, as pyinfra's --data does (e.g. pki_leaf_lifetime=1h)")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in args.data:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ModelError("--data", item, "KEY=VALUE")
        out[key] = parse_value(value)
    return out


def parse_value(text: str) -> Any:
    """As the pyinfra CLI reads ``--data`` values: true/false, integers, JSON, else the string.
    (Not imported from pyinfra_cli: importing it monkey-patches the process for gevent.)"""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return json.loads(text)
    except ValueError:
        return text


def _cluster(args: argparse.Namespace) -> Cluster:
    return load_cluster(args.inventory, _overrides(args))


def register(sub: Any) -> None:
    pki = sub.add_parser("pki", help="generate and inspect the cluster PKI in the local store")
    psub = pki.add_subparsers(dest="pki_command", required=True, metavar="ACTION")

    p = psub.add_parser("init", help="generate or converge pki/<cluster>/ (idempotent)")
    _add_inventory(p)
    p.add_argument("--reissue", action="append", default=[], metavar="ID",
                   help="re-issue this leaf even if valid (store id, e.g. etcd/m1/server)")
    p.set_defaults(func=cmd_init)

    p = psub.add_parser("show", help="table of every certificate in the store")
    _add_inventory(p)
    p.set_defaults(func=cmd_show)

    certs = sub.add_parser("certs", help="certificate expiry checks")
    csub = certs.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    p = csub.add_parser(
        "check", help="certificates installed on every host and in the store; exit 1 if any is "
        "expired, due or invalid, or a host cannot be read")
    _add_inventory(p)
    p.add_argument("--store-only", action="store_true", help="do not connect to the hosts")
    p.set_defaults(func=cmd_check)


def cmd_init(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    known = {s.id for _, s in inspect(cluster, store_for(cluster), utcnow()).leaves}
    unknown = sorted(set(args.reissue) - known)
    if unknown:
        print(f"metalseed: error: --reissue: unknown id(s) {unknown}; known: {sorted(known)}",
              file=sys.stderr)
        return 2
    report = init_pki(cluster, progress=lambda m: print(m, file=sys.stderr),
                      force=frozenset(args.reissue))
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    root = store_for(cluster).root
    if report.changed:
        print(f"{root}: {len(report.actions)} change(s)")
    else:
        print(f"{root}: up to date, nothing changed")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from metalseed.model import cluster_from_inventory, load_inventory
    from metalseed.pki.installed import MATCHES, collect, compare

    inventory = load_inventory(args.inventory, _overrides(args))
    cluster = cluster_from_inventory(inventory)
    now = utcnow()
    rc, stored = show_store(cluster, args.inventory, now)
    if args.store_only:
        return rc
    print(f"\nInstalled on the hosts ({len(cluster.nodes)}):", flush=True)
    items, errors = collect(cluster, inventory)
    statuses = compare(items, stored, cluster.pki, now)
    rows = [("HOST", "PATH", "SUBJECT", "NOT AFTER", "DAYS LEFT", "STORE", "STATUS")]
    states = []
    for st in statuses:
        info = st.item.info
        days = (info.not_after - now).total_seconds() / 86400 if info else None
        rows.append((st.item.host, st.item.path, info.subject if info else "-",
                     info.not_after.strftime("%Y-%m-%d %H:%M") if info else "-",
                     f"{days:.1f}" if days is not None else "-", st.store,
                     st.state + (f": {st.detail}" if st.detail and st.state != OK else "")))
        states.append(st.state)
    for host, err in sorted(errors.items()):
        rows.append((host, "-", "-", "-", "-", "-", f"unreachable: {err}"))
        states.append(INVALID)
    print(_table(rows, states, keep=(0, 1)))
    bad = [s for s in states if s != OK]
    stale = [st for st in statuses if not st.store.startswith(MATCHES)]
    if stale:
        print(f"\n{len(stale)} installed certificate(s) differ from the store or are not in it: "
              "rerun the deploys (or deploys/rotate-certs.py) to ship the store's.")
    if bad:
        print(f"\n{len(bad)} installed item(s) need attention.")
        return 1
    print(f"\nall {len(statuses)} installed certificates valid")
    return rc


def _colour(state: str, text: str) -> str:
    if not sys.stdout.isatty() or os.environ.get("NO_COLOR"):
        return text
    code = {OK: "32", EXPIRED: "1;31", INVALID: "1;31", MISSING: "33"}.get(state, "1;33")
    return f"\033[{code}m{text}\033[0m"


def format_table(statuses: list[Status], now: dt.datetime) -> str:
    rows = [("ID", "SUBJECT", "ISSUER", "SANS", "NOT AFTER", "DAYS LEFT", "STATUS")]
    states = []
    for s in statuses:
        info = s.info
        days = s.days_left(now)
        rows.append((
            s.id,
            info.subject if info else "-",
            info.issuer if info else "-",
            ",".join(info.sans()) if info and info.sans() else "-",
            info.not_after.strftime("%Y-%m-%d %H:%M") if info else "-",
            f"{days:.1f}" if days is not None else "-",
            s.state + (f": {s.detail}" if s.detail and s.state != OK else ""),
        ))
        states.append(s.state)
    return _table(rows, states)


def _table(rows: Sequence[tuple[str, ...]], states: list[str], keep: tuple[int, ...] = (0,)) -> str:
    """Aligned columns; the last column (status) is coloured by state and never cut, nor are the
    ``keep`` columns (what names a row: an id, a host and path, which an operator copies)."""
    n = len(rows[0]) - 1
    widths = [max(len(r[i]) for r in rows) if i in keep else min(max(len(r[i]) for r in rows), 48)
              for i in range(n)]
    lines = []
    for i, r in enumerate(rows):
        cells = [c if len(c) <= widths[j] else c[: widths[j] - 1] + "…"
                 for j, c in enumerate(r[:n])]
        line = "  ".join(c.ljust(widths[j]) for j, c in enumerate(cells)) + "  "
        last = r[n]
        lines.append(line + (last if i == 0 else _colour(states[i - 1], last)))
    return "\n".join(lines)


def cmd_show(args: argparse.Namespace) -> int:
    return show_store(_cluster(args), args.inventory, utcnow())[0]


def show_store(cluster: Cluster, inventory_arg: str, now: dt.datetime) -> tuple[int, Inventory]:
    """Print the store's table; (exit status, what was inspected)."""
    store = store_for(cluster)
    inv = inspect(cluster, store, now)
    statuses = inv.all()
    print(f"PKI store {store.root} (cluster {cluster.name}), {now:%Y-%m-%d %H:%M} UTC")
    print(format_table(statuses, now))
    bad = [s for s in statuses if s.state in BAD_FOR_CHECK]
    if bad:
        print(f"\n{len(bad)} of {len(statuses)} need attention: run `metalseed pki init "
              f"{inventory_arg}` (leaves) or rotate (CAs).")
        return 1, inv
    print(f"\nall {len(statuses)} valid")
    return 0, inv
