"""Gates and run-shaped operations every playbook shares.

pyinfra decides most of a run at prepare time; these operations carry the decisions that are
made there (commands to run, checks to call on the operator's machine) into the run without
costing a host anything when there is nothing to do. In pyinfra's API mode an operation is
identified by its position, so every host must make the same sequence of calls: each of these
yields nothing where it is not needed, instead of being skipped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Sequence
from typing import Any, TypeVar

from pyinfra import host as current_host
from pyinfra import logger
from pyinfra.api import FunctionCommand, StringCommand, operation
from pyinfra.api.state import State

T = TypeVar("T")


def _raise(exc: BaseException) -> None:
    raise exc


@operation()
def gate(check: Callable[[], None], description: str) -> Generator[Any, None, None]:
    """Run ``check`` on the operator's machine when the deploy executes. It is not a change: a
    passing gate yields no command; a failing one yields a command that raises, so pyinfra
    reports the failure against this operation."""
    del description  # only names the operation
    if not current_host.state.is_executing:
        return
    try:
        check()
    except Exception as e:
        yield FunctionCommand(_raise, (e,), {})


_shared_lock = threading.Lock()


def shared(state: State, key: str, fn: Callable[[], T]) -> T:
    """Compute ``fn`` once per run and hand every host the same result -- or the same error, so
    that a failed gate stops *every* host, not only the first (pyinfra carries on with the hosts
    an operation did not fail on)."""
    cache: dict[str, tuple[bool, Any]] = state.__dict__.setdefault("_metalseed_shared", {})
    with _shared_lock:
        if key not in cache:
            try:
                cache[key] = (True, fn())
            except Exception as e:
                cache[key] = (False, e)
    ok, value = cache[key]
    if not ok:
        raise value
    return value

@operation()
def run_commands(commands: Sequence[str]) -> Generator[Any, None, None]:
    """Shell commands decided at prepare time; no commands, no change.

    Every master calls every operation, with an empty list where nothing is needed: in
    pyinfra's API mode an operation is identified by its position, so hosts must make the same
    sequence of calls (the CLI goes by line number and would not mind)."""
    for c in commands:
        yield StringCommand(c)


@operation()
def call_if(needed: bool, function: Callable[..., None], **kwargs: Any
            ) -> Generator[Any, None, None]:
    """``function(state, host, **kwargs)`` on the operator's machine, only where ``needed``."""
    if needed:
        yield FunctionCommand(function, (), kwargs)




@operation()
def say(lines: Callable[[], Sequence[str]]) -> Generator[Any, None, None]:
    """Print ``lines()`` on the operator's machine when the run executes (after every operation
    before it); never a change, and nothing under ``--dry``."""
    if not current_host.state.is_executing:
        return
    for line in lines():
        logger.info(line)
    yield from ()
