"""``metalseed tenants``: placement of tenants across a fleet of seeds, and their status on one."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from metalseed.tenants.fleet import assign, load_fleet, write_placement
from metalseed.tenants.placement import load_report


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("tenants", help="tenant control planes on seeds")
    tsub = p.add_subparsers(dest="tenants_command", required=True, metavar="SUBCOMMAND")
    place = tsub.add_parser("place", help="put each unplaced tenant of a fleet file on a seed")
    place.add_argument("fleet", metavar="FLEET", help="the fleet file (TOML: seeds and tenants)")
    place.add_argument("--dry", action="store_true", help="print the assignment, write nothing")
    place.set_defaults(func=cmd_place)
    st = tsub.add_parser("status", help="each tenant of a seed: API, datastore usage, certificates",
                         description="Each tenant of the seed INVENTORY: its API's /readyz through "
                         "the edge with its admin.conf, its Deployment, its keys and bytes in the "
                         "datastore, its nearest certificate expiry. Exits 1 when one is unhealthy.")
    st.add_argument("inventory", metavar="INVENTORY", help="the seed's pyinfra inventory file")
    st.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting, as pyinfra's --data does (e.g. kubernetes=true)")
    st.add_argument("--json", action="store_true", help="JSON instead of a table")
    st.set_defaults(func=cmd_status)
    ve = tsub.add_parser("verify", help="prove tenant isolation with a probe matrix",
                         description="From each tenant's probe pod, agnhost connect to every "
                         "allowed path (kube-dns, the datastore, its own workers) and every "
                         "forbidden one (every other tenant's API, the seed's API, an unallowed "
                         "port); the edge's path to each tenant by its /readyz. Prints expected "
                         "and seen; exits 1 on any unexpected result.")
    ve.add_argument("inventory", metavar="INVENTORY", help="the seed's pyinfra inventory file")
    ve.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting, as pyinfra's --data does (e.g. kubernetes=true)")
    ve.set_defaults(func=cmd_verify)


def cmd_place(args: argparse.Namespace) -> int:
    fleet = load_fleet(args.fleet)
    assignment, new = assign(fleet)
    profiles = {n: str(s.get("profile", "small")) for n, s in fleet.tenants.items()}
    print(f"{'TENANT':<24} {'PROFILE':<8} SEED")
    for name, seed in sorted(assignment.items()):
        mark = "  (new)" if name in new else ""
        print(f"{name:<24} {profiles[name]:<8} {seed}{mark}")
    print(f"\n{'SEED':<24} {'TENANTS':>7} {'CPU':>6} {'MEMORY':>7}  (requests / allocatable)")
    for seed, count, cpu, mem in load_report(fleet.seeds, assignment, profiles):
        print(f"{seed:<24} {count:>7} {cpu:>6.0%} {mem:>7.0%}")
    if args.dry:
        print(f"\n--dry: {fleet.placement_path} not written")
    else:
        write_placement(fleet, assignment)
        print(f"\nwrote {fleet.placement_path} ({len(new)} newly placed)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from metalseed.pki.cli import _cluster
    from metalseed.tenants.status import format_table, status, to_json

    cluster = _cluster(args)
    now = dt.datetime.now(dt.UTC)
    statuses = status(cluster, now)
    sys.stdout.write(to_json(statuses) if args.json else format_table(statuses, now))
    bad = [s for s in statuses if not s.healthy]
    for s in bad:
        print(f"tenant {s.obs.name} is unhealthy: {'; '.join(s.reasons())}", file=sys.stderr)
    return 1 if bad else 0


def cmd_verify(args: argparse.Namespace) -> int:
    from metalseed.pki.cli import _cluster
    from metalseed.tenants.verify import format_table, run

    probes, seconds = run(_cluster(args))
    sys.stdout.write(format_table(probes))
    print(f"probe matrix: {seconds:.1f} s")
    bad = [p for p in probes if not p.as_expected]
    for p in bad:
        print(f"unexpected: {p.source} -> {p.target} ({p.address}): expected "
              f"{'allow' if p.allowed else 'deny'}, seen {p.seen}", file=sys.stderr)
    return 1 if bad else 0
