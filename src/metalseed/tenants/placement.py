"""Placement of tenants across seeds, a pure function: each unplaced tenant goes to the least
loaded seed that still keeps its headroom after taking it; placed tenants never move.

Load is the larger of the CPU and memory shares a seed's tenants request of its allocatable
capacity; ties go to the seed with fewer tenants, then to the name. When nothing fits, the error
says what a new seed would have to offer.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from metalseed.errors import PlacementError
from metalseed.tenants.profiles import PROFILES
from metalseed.tenants.quantity import format_cpu, format_memory

DEFAULT_HEADROOM = 0.2


@dataclass(frozen=True)
class Seed:
    name: str
    cpu_m: int
    """Allocatable CPU (millicores) for tenant control planes."""
    memory: int
    """Allocatable memory (bytes) for tenant control planes."""


@dataclass(frozen=True)
class Tenant:
    name: str
    profile: str
    seed: str | None = None
    """The seed it runs on; None: not placed yet."""


@dataclass
class _Load:
    seed: Seed
    cpu_m: int = 0
    memory: int = 0
    tenants: int = 0

    def key(self) -> tuple[float, int, str]:
        share = max(self.cpu_m / self.seed.cpu_m, self.memory / self.seed.memory)
        return share, self.tenants, self.seed.name

    def fits(self, cpu_m: int, memory: int, headroom: float) -> bool:
        usable = 1.0 - headroom
        return (self.cpu_m + cpu_m <= self.seed.cpu_m * usable
                and self.memory + memory <= self.seed.memory * usable)


def place(seeds: Iterable[Seed], tenants: Iterable[Tenant],
          headroom: float = DEFAULT_HEADROOM) -> dict[str, str]:
    """tenant name -> seed name for every tenant (placed ones unchanged).

    Unplaced tenants are taken largest request first (then by name), so big control planes are
    not left without room by many small ones; the result depends only on the input.
    Raises PlacementError naming every tenant that fits nowhere and what a new seed must offer.
    """
    if not 0 <= headroom < 1:
        raise PlacementError(f"headroom must be at least 0 and below 1, found {headroom}")
    loads = {s.name: _Load(s) for s in seeds}
    tenants = list(tenants)
    requests = {name: p.requests for name, p in PROFILES.items()}
    result: dict[str, str] = {}
    for t in tenants:
        if t.profile not in PROFILES:
            raise PlacementError(f"tenant {t.name!r}: unknown profile {t.profile!r} "
                                 f"(one of {', '.join(PROFILES)})")
        if t.seed is None:
            continue
        if t.seed not in loads:
            raise PlacementError(f"tenant {t.name!r} is placed on {t.seed!r}, which is not in the "
                                 f"fleet ({', '.join(sorted(loads)) or 'no seeds'})")
        cpu, mem = requests[t.profile]
        load = loads[t.seed]
        load.cpu_m, load.memory, load.tenants = load.cpu_m + cpu, load.memory + mem, load.tenants + 1
        result[t.name] = t.seed
    heap = [(load.key(), name) for name, load in loads.items()]
    heapq.heapify(heap)
    unplaced = sorted((t for t in tenants if t.seed is None),
                      key=lambda t: (-requests[t.profile][0], -requests[t.profile][1], t.name))
    homeless: list[Tenant] = []
    for t in unplaced:
        cpu, mem = requests[t.profile]
        skipped = []
        chosen = None
        # Least loaded first; a seed that is too full for this tenant may still take a smaller one.
        while heap:
            entry = heapq.heappop(heap)
            if loads[entry[1]].fits(cpu, mem, headroom):
                chosen = entry[1]
                break
            skipped.append(entry)
        for entry in skipped:
            heapq.heappush(heap, entry)
        if chosen is None:
            homeless.append(t)
            continue
        load = loads[chosen]
        load.cpu_m, load.memory, load.tenants = load.cpu_m + cpu, load.memory + mem, load.tenants + 1
        heapq.heappush(heap, (load.key(), chosen))
        result[t.name] = chosen
    if homeless:
        cpu = max(PROFILES[t.profile].requests[0] for t in homeless)
        mem = max(PROFILES[t.profile].requests[1] for t in homeless)
        total_cpu = sum(PROFILES[t.profile].requests[0] for t in homeless)
        total_mem = sum(PROFILES[t.profile].requests[1] for t in homeless)
        usable = 1.0 - headroom
        raise PlacementError(
            f"{len(homeless)} tenant(s) fit on no seed with {headroom:.0%} headroom: "
            f"{_names(homeless)}. A new seed must offer at "
            f"least {format_cpu(_up(cpu / usable))} CPU and "
            f"{format_memory(_up(mem / usable))} memory allocatable for the largest of them, "
            f"{format_cpu(_up(total_cpu / usable))} CPU and {format_memory(_up(total_mem / usable))} "
            "for all of them.")
    return result


def _names(tenants: list[Tenant], shown: int = 10) -> str:
    names = ", ".join(f"{t.name} ({t.profile})" for t in tenants[:shown])
    return names + (f" and {len(tenants) - shown} more" if len(tenants) > shown else "")


def _up(x: float) -> int:
    return int(-(-x // 1))


def load_report(seeds: Iterable[Seed], assignment: Mapping[str, str],
                profiles: Mapping[str, str]) -> list[tuple[str, int, float, float]]:
    """Per seed: (name, tenants, CPU share, memory share) requested under ``assignment``."""
    rows = []
    for s in seeds:
        names = [t for t, seed in assignment.items() if seed == s.name]
        cpu = sum(PROFILES[profiles[t]].requests[0] for t in names)
        mem = sum(PROFILES[profiles[t]].requests[1] for t in names)
        rows.append((s.name, len(names), cpu / s.cpu_m, mem / s.memory))
    return rows
