"""``metalseed lab ...``: up, status, ssh, down, fault."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from metalseed.errors import LabError
from metalseed.lab import plan as planmod
from metalseed.lab.core import Lab
from metalseed.lab.inventory import ENV_LAB
from metalseed.lab.ssh import ssh_argv

FAULTS = ("crash", "restart", "freeze", "thaw", "cut", "restore", "stop-service", "kill-service")


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "lab",
        help="the local lab of systemd machines",
        description="Boot, drive and remove a lab of systemd-nspawn machines on this host.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--name",
        default=os.environ.get(ENV_LAB) or planmod.DEFAULT_NAME,
        help=f"lab name (default: ${ENV_LAB} or {planmod.DEFAULT_NAME!r}); labs live side by side",
    )
    lab_sub = p.add_subparsers(dest="lab_command", required=True, metavar="ACTION")

    up = lab_sub.add_parser("up", parents=[common], help="boot the lab (idempotent)")
    up.add_argument("--masters", type=int, default=planmod.DEFAULT_MASTERS)
    up.add_argument("--workers", type=int, default=planmod.DEFAULT_WORKERS)
    up.add_argument("--datastore", type=int, default=0, metavar="N",
                    help="N machines d1.. for a tenant datastore (the inventory's datastore group)")
    up.add_argument("--tenant-workers", type=int, default=0, metavar="N",
                    help="N machines t1.. that join a tenant's control plane (the inventory's"
                         " tenant_workers group), no nodes of the seed")
    up.add_argument("--seed", action="store_true",
                    help="the machines a seed needs (inventory/lab-seed.py): the masters and"
                         " workers plus at least one datastore machine and one tenant worker")
    up.add_argument("--subnet", help="the lab /24 (default: derived from the name)")
    up.add_argument("--timeout", type=float, default=60, help="seconds to wait for SSH")
    up.set_defaults(func=_up)

    st = lab_sub.add_parser("status", parents=[common], help="machines, addresses, states")
    st.set_defaults(func=_status)

    ssh = lab_sub.add_parser("ssh", parents=[common], help="a root shell or command on a machine")
    ssh.add_argument("machine")
    ssh.add_argument("command", nargs=argparse.REMAINDER)
    ssh.set_defaults(func=_ssh)

    down = lab_sub.add_parser("down", parents=[common], help="remove everything of the lab")
    down.set_defaults(func=_down)

    fault = lab_sub.add_parser("fault", parents=[common], help="inject (or undo) a fault")
    fault.add_argument("action", choices=FAULTS)
    fault.add_argument("machine")
    fault.add_argument("service", nargs="?", help="unit, for stop-service and kill-service")
    fault.set_defaults(func=_fault)


def _up(args: argparse.Namespace) -> int:
    lab = Lab(args.name)
    lab.up(args.masters, args.workers, subnet=args.subnet, timeout=args.timeout,
           datastore=seed_datastore(args.datastore) if args.seed else args.datastore,
           tenant_workers=(seed_tenant_workers(args.tenant_workers) if args.seed
                           else args.tenant_workers))
    _print_status(lab)
    return 0


def seed_datastore(requested: int) -> int:
    """Datastore machines of ``lab up --seed``: a seed's tenant API servers need a datastore on
    its network, one member unless more were asked for."""
    return max(1, requested)


def seed_tenant_workers(requested: int) -> int:
    """Tenant workers of ``lab up --seed``: inventory/lab-seed.py gives acme t1."""
    return max(1, requested)


def _print_status(lab: Lab) -> None:
    s = lab.require_state()
    print(f"lab {s.name}: subnet {s.subnet}, bridge {s.bridge} ({s.bridge_address}), "
          f"VIP {s.vip}, key {s.key}")
    if s.mirror_url:
        print(f"mirror {s.mirror_root} served at {s.mirror_url} (PID {s.mirror_pid})")
    print(f"{'MACHINE':<8} {'ROLE':<13} {'ADDRESS':<15} STATE")
    for m in lab.status():
        print(f"{m.name:<8} {m.role:<13} {m.address!s:<15} {m.state}")


def _status(args: argparse.Namespace) -> int:
    lab = Lab(args.name)
    if lab.state() is None:
        print(f"lab {args.name}: not up")
        return 1
    _print_status(lab)
    return 0


def _ssh(args: argparse.Namespace) -> int:
    lab = Lab(args.name)
    m = lab.require_state().machine(args.machine)
    # Like ssh itself: the words are joined with spaces and the remote shell parses them.
    command = " ".join(args.command) if args.command else None
    argv = ssh_argv(lab.key, str(m.address), command, tty=command is None and sys.stdin.isatty())
    sys.stdout.flush()
    os.execvp(argv[0], argv)  # hand the terminal to ssh; its exit code becomes ours


def _down(args: argparse.Namespace) -> int:
    Lab(args.name).down()
    return 0


def _fault(args: argparse.Namespace) -> int:
    lab = Lab(args.name)
    action = args.action
    if action in ("stop-service", "kill-service"):
        if not args.service:
            raise LabError(f"lab fault {action} needs a SERVICE (e.g. etcd)")
        (lab.stop_service if action == "stop-service" else lab.kill_service)(
            args.machine, args.service
        )
    else:
        if args.service:
            raise LabError(f"lab fault {action} takes no SERVICE")
        getattr(lab, action)(args.machine)
    print(f"{args.machine}: {action} done")
    return 0
