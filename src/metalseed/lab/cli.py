"""``metalseed lab ...`` (placeholder until the lab lands)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("lab", help="the local lab of systemd machines")
    p.set_defaults(func=lambda args: p.error("not implemented yet"))
