"""Shared by the lab tests and benchmarks: a loop in a background thread (the etcd writer, the
HTTPS client) and the totals of a pyinfra run."""

from __future__ import annotations

import re
import threading
from typing import Self


def pyinfra_totals(output: str) -> dict[str, int]:
    """The 'Grand total' row of pyinfra's results table: hosts, success, error, no_change
    (pyinfra prints '-' for zero). KeyError-free: a run without the table gives an empty dict."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)
    m = re.search(r"Grand total\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", plain)
    if not m:
        return {}
    return {k: 0 if v == "-" else int(v)
            for k, v in zip(("hosts", "success", "error", "no_change"), m.groups(), strict=True)}


class BackgroundLoop:
    """Runs ``_run`` in a daemon thread while used as a context manager. ``_run`` ends when
    ``self._stop`` is set (``stop()``, or leaving the ``with`` block)."""

    thread_name = "probe"
    join_timeout = 10.0
    _stop: threading.Event
    _thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(self.join_timeout)

    def _run(self) -> None:
        raise NotImplementedError
