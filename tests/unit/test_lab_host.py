"""Host prerequisite checks and process helpers of the lab."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from metalseed.errors import LabError
from metalseed.lab import host


def test_not_linux_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host.platform, "system", lambda: "Darwin")
    with pytest.raises(LabError, match="needs Linux with systemd-nspawn; this is Darwin"):
        host.check_host()


def test_not_root_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host.platform, "system", lambda: "Linux")
    monkeypatch.setattr(host.os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match="needs root"):
        host.check_host()


def test_missing_tool_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host.platform, "system", lambda: "Linux")
    monkeypatch.setattr(host.os, "geteuid", lambda: 0)
    monkeypatch.setattr(host.shutil, "which", lambda tool: None)  # no apt either
    with pytest.raises(LabError, match="systemd-nspawn not found"):
        host.check_host()


def test_run_failures_name_the_command() -> None:
    with pytest.raises(LabError, match=r"`false` failed \(exit 1\)"):
        host.run(["false"])
    with pytest.raises(LabError, match="command not found"):
        host.run(["no-such-command-metalseed"])


def test_pid_helpers() -> None:
    assert host.pid_alive(os.getpid())
    assert not host.pid_alive(None)
    assert host.cmdline(os.getpid())
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while host.pid_alive(child.pid):  # a zombie counts as dead
        assert time.monotonic() < deadline
        time.sleep(0.01)
    host.reap(child.pid)  # whoever reaps first (us, or a library's SIGCHLD handler): no error
    assert not host.pid_alive(child.pid)
