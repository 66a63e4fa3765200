"""The local lab: systemd machines on this host (systemd-nspawn), with fault injection.

``Lab(name).up()`` boots masters ``m1..`` and workers ``w1..`` on a private /24; see
:mod:`metalseed.lab.core` for the API and :mod:`metalseed.lab.faults` for the faults.
"""

from metalseed.lab.core import Lab, MachineStatus
from metalseed.lab.plan import VIP_HOST, LabPlan, MachinePlan, derive_subnet, plan_lab
from metalseed.lab.state import LabState, MachineState

VIP_INTERFACE = "eth0"
"""Name of every machine's lab interface (keepalived's ``interface``)."""

__all__ = [
    "VIP_HOST",
    "VIP_INTERFACE",
    "Lab",
    "LabPlan",
    "LabState",
    "MachinePlan",
    "MachineState",
    "MachineStatus",
    "derive_subnet",
    "plan_lab",
]
