"""The fleet file: seeds (their inventories and the capacity they give tenant control planes) and
tenants, and the placement file ``metalseed tenants place`` writes beside it.

    # fleet.toml
    headroom = 0.2                      # optional, the default
    [seeds.seed-a]
    inventory = "inventory/seed-a.py"
    cpu = "16"                          # allocatable for tenant control planes
    memory = "64Gi"
    [tenants.acme]
    profile = "small"                   # plus kubernetes_version, labels, workers; seed = "..." pins it

The placement (``fleet.placement.toml``) maps each tenant to its seed; a seed inventory takes its
tenants with ``tenants = seed_tenants("fleet.toml", "seed-a")`` in its group data, so
``deploys/seed.py`` converges exactly the tenants placed there.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metalseed.errors import PlacementError
from metalseed.tenants.placement import DEFAULT_HEADROOM, Seed, Tenant, place
from metalseed.tenants.quantity import cpu_millis, memory_bytes

FLEET_KEYS = ("headroom", "seeds", "tenants")
SEED_KEYS = ("inventory", "cpu", "memory")


@dataclass(frozen=True)
class Fleet:
    path: Path
    headroom: float
    seeds: tuple[Seed, ...]
    inventories: dict[str, str]
    tenants: dict[str, dict[str, Any]]
    """tenant name -> its spec as written (``seed`` included when the file pins it)."""

    @property
    def placement_path(self) -> Path:
        return self.path.with_suffix(".placement.toml")


def _unknown(where: str, keys: Any, known: tuple[str, ...]) -> None:
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PlacementError(f"{where}: unknown key {key!r}; accepted: {', '.join(known)}{hint}")


def load_fleet(path: str | Path) -> Fleet:
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except OSError as e:
        raise PlacementError(f"cannot read the fleet file {p}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise PlacementError(f"{p}: not valid TOML: {e}") from e
    _unknown(str(p), raw, FLEET_KEYS)
    headroom = raw.get("headroom", DEFAULT_HEADROOM)
    if isinstance(headroom, bool) or not isinstance(headroom, (int, float)) or not 0 <= headroom < 1:
        raise PlacementError(f"{p}: headroom: found {headroom!r}; accepted: a fraction in [0, 1)")
    seeds: list[Seed] = []
    inventories: dict[str, str] = {}
    for name, s in (raw.get("seeds") or {}).items():
        where = f"{p}: seeds.{name}"
        if not isinstance(s, dict):
            raise PlacementError(f"{where}: a table with {', '.join(SEED_KEYS)}")
        _unknown(where, s, SEED_KEYS)
        missing = [k for k in SEED_KEYS if k not in s]
        if missing:
            raise PlacementError(f"{where}: missing {', '.join(missing)}")
        try:
            seeds.append(Seed(name, cpu_millis(s["cpu"]), memory_bytes(s["memory"])))
        except ValueError as e:
            raise PlacementError(f"{where}: {e}") from e
        inventories[name] = str(s["inventory"])
    if not seeds:
        raise PlacementError(f"{p}: no seeds (add a [seeds.<name>] table)")
    tenants = raw.get("tenants") or {}
    for name, t in tenants.items():
        if not isinstance(t, dict):
            raise PlacementError(f"{p}: tenants.{name}: a table such as profile = \"small\"")
    return Fleet(p, float(headroom), tuple(seeds), inventories, dict(tenants))


def read_placement(fleet: Fleet) -> dict[str, str]:
    try:
        raw = tomllib.loads(fleet.placement_path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise PlacementError(f"cannot read {fleet.placement_path}: {e}") from e
    placed = raw.get("placement") or {}
    return {str(k): str(v) for k, v in placed.items()}


def assign(fleet: Fleet) -> tuple[dict[str, str], set[str]]:
    """The whole fleet's assignment, and the tenants placed by this call (the new ones)."""
    placed = read_placement(fleet)
    tenants = []
    for name, spec in sorted(fleet.tenants.items()):
        seed = spec.get("seed") or placed.get(name)
        tenants.append(Tenant(name, str(spec.get("profile", "small")),
                              str(seed) if seed else None))
    result = place(fleet.seeds, tenants, fleet.headroom)
    return result, {t.name for t in tenants if t.seed is None}


def write_placement(fleet: Fleet, assignment: dict[str, str]) -> None:
    lines = [f"# Written by `metalseed tenants place {fleet.path.name}`: tenant = seed.",
             "# Placed tenants never move; edit the fleet file, not this one.", "", "[placement]"]
    lines += [f'"{name}" = "{seed}"' for name, seed in sorted(assignment.items())]
    tmp = fleet.placement_path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(fleet.placement_path)


def seed_tenants(fleet_path: str | Path, seed: str) -> dict[str, dict[str, Any]]:
    """The tenants placed on ``seed`` with their specs (without ``seed``), for group data."""
    fleet = load_fleet(fleet_path)
    if seed not in {s.name for s in fleet.seeds}:
        raise PlacementError(f"{fleet.path}: no seed {seed!r}")
    placed = read_placement(fleet)
    return {name: {k: v for k, v in spec.items() if k != "seed"}
            for name, spec in sorted(fleet.tenants.items())
            if (spec.get("seed") or placed.get(name)) == seed}
