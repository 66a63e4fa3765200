"""The `metalseed lab` command line, parsed without running anything."""

from __future__ import annotations

import pytest

from metalseed.cli import build_parser


def test_up_defaults_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METALSEED_LAB", raising=False)
    args = build_parser().parse_args(["lab", "up"])
    assert (args.name, args.masters, args.workers, args.subnet) == ("lab", 3, 2, None)
    args = build_parser().parse_args(
        ["lab", "up", "--masters", "1", "--workers", "0", "--name", "x", "--subnet",
         "10.213.9.0/24"]
    )
    assert (args.name, args.masters, args.workers, args.subnet) == ("x", 1, 0, "10.213.9.0/24")


def test_name_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METALSEED_LAB", "test")
    assert build_parser().parse_args(["lab", "status"]).name == "test"


def test_ssh_keeps_the_remote_command() -> None:
    args = build_parser().parse_args(["lab", "ssh", "m1", "systemctl", "status", "-l"])
    assert (args.machine, args.command) == ("m1", ["systemctl", "status", "-l"])


def test_fault_actions() -> None:
    args = build_parser().parse_args(["lab", "fault", "kill-service", "m2", "etcd"])
    assert (args.action, args.machine, args.service) == ("kill-service", "m2", "etcd")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["lab", "fault", "explode", "m2"])
