"""A loop in a background thread for the lab probes (the etcd writer, the HTTPS client)."""

from __future__ import annotations

import threading
from typing import Self


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
