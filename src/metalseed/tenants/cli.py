"""``metalseed tenants``: placement of tenants across a fleet of seeds."""

from __future__ import annotations

import argparse
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
