"""Kubernetes resource quantities, as far as tenant profiles and seed capacities need them:
CPU in millicores, memory in bytes."""

from __future__ import annotations

import re

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)$")


def cpu_millis(value: object) -> int:
    """``"2"``, ``2``, ``"1.5"`` or ``"500m"`` as millicores; ValueError otherwise."""
    text = str(value).strip()
    m = _QUANTITY.match(text)
    if isinstance(value, bool) or not m or m.group(2) not in ("", "m"):
        raise ValueError("a CPU quantity such as 2, 1.5 or 500m")
    number = float(m.group(1))
    millis = number if m.group(2) == "m" else number * 1000
    if millis <= 0 or millis != int(millis):
        raise ValueError("a CPU quantity such as 2, 1.5 or 500m (positive, whole millicores)")
    return int(millis)


def memory_bytes(value: object) -> int:
    """``"64Gi"``, ``"512Mi"``, ``"1G"`` or a byte count; ValueError otherwise."""
    text = str(value).strip()
    m = _QUANTITY.match(text)
    unit = m.group(2) if m else None
    if isinstance(value, bool) or not m or unit not in ("", *_BINARY, *_DECIMAL):
        raise ValueError("a memory quantity such as 64Gi, 512Mi or 1G")
    size = float(m.group(1)) * (_BINARY.get(unit or "") or _DECIMAL.get(unit or "") or 1)
    if size <= 0:
        raise ValueError("a memory quantity such as 64Gi, 512Mi or 1G (positive)")
    return int(size)


def format_cpu(millis: int) -> str:
    return f"{millis // 1000}" if millis % 1000 == 0 else f"{millis}m"


def format_memory(size: int) -> str:
    for unit in ("Ti", "Gi", "Mi", "Ki"):
        if size % _BINARY[unit] == 0:
            return f"{size // _BINARY[unit]}{unit}"
    # Rounded up: what a seed must offer is never understated.
    return f"{-(-size // _BINARY['Mi'])}Mi"
