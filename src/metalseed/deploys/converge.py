"""Converge a host in ONE pyinfra operation: one fact command reads every file digest and mode,
unit state, sysctl and package a component depends on; :func:`plan` (pure) turns the difference
into commands. A converged host therefore costs one SSH round trip per run (the cost model in
DESIGN.md), and a change is applied in a safe order:

1. missing packages, then sysctls;
2. every changed file is uploaded next to its target, checked there (``nginx -t`` say) and only
   then moved into place -- a bad file never reaches a live path;
3. units unmasked (the lab masks them), enabled and started; a running unit is *reloaded* (or
   restarted, where its file says so) only when one of its own files changed;
4. the unit's health command must pass before the operation, and so the host, is done.

Used by the edge, the certificate-check timer, containerd and Kubernetes.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import shlex
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyinfra import host, logger
from pyinfra.api import FactBase, FileUploadCommand, StringCommand, operation
from pyinfra.facts.files import FileContents

STAGED_SUFFIX = ".metalseed-new"


# --------------------------------------------------------------------------------------------
# What a host should look like


@dataclass(frozen=True)
class ManagedFile:
    path: str
    content: bytes
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    dir_mode: int | None = None
    """Mode of the parent directory (created if missing); None: created 0755 if missing."""
    check: str | None = None
    """Shell command validating the staged copy; ``{path}`` is replaced by its quoted path."""
    unit: str | None = None
    """The unit that reads this file: reloaded (or started) when the file changes."""
    restart: bool = False
    """Restart rather than reload ``unit`` (for unit files themselves)."""
    unit_file: bool = False
    """A systemd unit file: ``daemon-reload`` after it changes."""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class ManagedDir:
    path: str
    mode: int = 0o755
    owner: str = "root"
    group: str = "root"


@dataclass(frozen=True)
class HostSpec:
    packages: tuple[str, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()
    dirs: tuple[ManagedDir, ...] = ()
    """Created (or corrected) before any file, in this order."""
    files: tuple[ManagedFile, ...] = ()
    units: tuple[str, ...] = ()
    """Unmasked, enabled and running, in this order."""
    health: dict[str, str] = field(default_factory=dict)
    """unit -> command that must succeed after the unit was (re)started or reloaded."""
    cleanup: str | None = None
    """Shell command run after any file changed (e.g. remove superseded certificate bundles)."""
    retired_units: tuple[str, ...] = ()
    """Units that must not run: stopped and disabled where they are (before files go)."""
    absent: tuple[str, ...] = ()
    """Files that must not exist (a feature switched off)."""


@dataclass
class HostState:
    files: dict[str, tuple[str, int]] = field(default_factory=dict)  # path -> (sha256, mode)
    stats: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    """Every existing path (files and directories) -> (mode, owner, group)."""
    units: dict[str, dict[str, str]] = field(default_factory=dict)  # unit -> systemctl show props
    mtimes: dict[str, int] = field(default_factory=dict)  # path -> modification time (unix s)
    started: dict[str, int] = field(default_factory=dict)
    """unit -> when it last became active (unix s); absent where systemd cannot say."""
    sysctls: dict[str, str] = field(default_factory=dict)
    packages: set[str] = field(default_factory=set)  # installed ("ii")


# --------------------------------------------------------------------------------------------
# One fact for everything


def snapshot_command(paths: Sequence[str], units: Sequence[str], sysctls: Sequence[str],
                     packages: Sequence[str]) -> str:
    q = " ".join(shlex.quote(p) for p in paths)
    parts = ["echo '[sha]'"]
    if paths:
        parts += [f"sha256sum {q} 2>/dev/null", "echo '[mode]'",
                  f"stat -c '%a %U %G %n' {q} 2>/dev/null", "echo '[mtime]'",
                  f"stat -c '%Y %n' {q} 2>/dev/null"]
    if units:
        quoted_units = " ".join(shlex.quote(u) for u in units)
        parts += ["echo '[units]'",
                  f"systemctl show -p Id,LoadState,UnitFileState,ActiveState {quoted_units}",
                  # Separate and best effort (--timestamp needs systemd >= 248): without it a
                  # unit is restarted only for a file this run changes.
                  "echo '[started]'",
                  f"systemctl show --timestamp=unix -p Id,ActiveEnterTimestamp {quoted_units} "
                  "2>/dev/null"]
    if sysctls:
        parts += ["echo '[sysctl]'", "sysctl " + " ".join(shlex.quote(s) for s in sysctls)
                  + " 2>/dev/null"]
    if packages:
        parts += ["echo '[packages]'",
                  "dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' "
                  + " ".join(shlex.quote(p) for p in packages) + " 2>/dev/null"]
    # Missing files/packages make their commands fail; what matters is what they printed.
    return "; ".join(parts) + "; true"


def parse_snapshot(lines: Iterable[str]) -> HostState:
    st = HostState()
    section = ""
    shas: dict[str, str] = {}
    unit: dict[str, str] = {}

    def flush_unit() -> None:
        if "Id" in unit:
            if section == "started":
                stamp = unit.get("ActiveEnterTimestamp", "")
                if stamp.startswith("@") and stamp[1:].isdigit():
                    st.started[unit["Id"]] = int(stamp[1:])
            else:
                st.units[unit["Id"]] = dict(unit)
        unit.clear()

    for raw in lines:
        line = raw.rstrip("\n")
        if line.startswith("[") and line.endswith("]"):
            flush_unit()
            section = line[1:-1]
            continue
        if section == "sha" and "  " in line:
            sha, path = line.split("  ", 1)
            shas[path] = sha
        elif section == "mode" and line.count(" ") >= 3:
            mode, owner, group, path = line.split(" ", 3)
            st.stats[path] = (int(mode, 8), owner, group)
        elif section == "mtime" and " " in line:
            stamp, path = line.split(" ", 1)
            if stamp.isdigit():
                st.mtimes[path] = int(stamp)
        elif section in ("units", "started"):
            if not line.strip():
                flush_unit()
            elif "=" in line:
                k, v = line.split("=", 1)
                unit[k] = v
        elif section == "sysctl" and " = " in line:
            k, v = line.split(" = ", 1)
            st.sysctls[k.strip()] = v.strip()
        elif section == "packages":
            bits = line.split()
            if len(bits) >= 2 and bits[1].startswith("ii"):
                st.packages.add(bits[0].split(":")[0])
    flush_unit()
    st.files = {p: (sha, st.stats.get(p, (-1, "", ""))[0]) for p, sha in shas.items()}
    return st


def converged_snapshot(spec: HostSpec) -> list[str]:
    """What the snapshot prints on a host that already looks like ``spec`` (for @fake tests)."""
    lines = ["[sha]"] + [f"{f.sha256}  {f.path}" for f in spec.files]
    lines += ["[mode]"] + [f"{d.mode:o} {d.owner} {d.group} {d.path}" for d in spec.dirs]
    lines += [f"{f.mode:o} {f.owner} {f.group} {f.path}" for f in spec.files]
    lines += ["[units]"]
    for u in spec.units:
        lines += [f"Id={u}", "LoadState=loaded", "UnitFileState=enabled", "ActiveState=active", ""]
    lines += ["[sysctl]"] + [f"{k} = {v}" for k, v in spec.sysctls]
    lines += ["[packages]"] + [f"{p} ii " for p in spec.packages]
    return lines


class HostSnapshot(FactBase[HostState]):
    """Digests and modes of files, unit states, sysctls and installed packages: one command."""

    def command(self, paths: tuple[str, ...], units: tuple[str, ...], sysctls: tuple[str, ...],
                packages: tuple[str, ...]) -> str:
        return snapshot_command(paths, units, sysctls, packages)

    @staticmethod
    def default() -> HostState:
        return HostState()

    def process(self, output: list[str]) -> HostState:
        return parse_snapshot(output)


# --------------------------------------------------------------------------------------------
# Pure planning: (wanted, observed) -> steps


@dataclass(frozen=True)
class Upload:
    content: bytes
    dest: str


Step = str | Upload


@dataclass(frozen=True)
class Changes:
    """What differs between a host and its spec (pure); both the steps and the report of a run
    (``pyinfra --dry`` lists it per host) come from it."""

    packages: tuple[str, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()
    dirs: tuple[ManagedDir, ...] = ()
    drifted: tuple[ManagedFile, ...] = ()
    """Files whose content, mode or owner differ."""
    changed: tuple[ManagedFile, ...] = ()
    """Of those, the files whose content differs (new files included)."""
    unmask: tuple[str, ...] = ()
    enable: tuple[str, ...] = ()
    unit_actions: tuple[tuple[str, str], ...] = ()
    """(unit, start | restart | reload), in the spec's unit order."""
    retire: tuple[str, ...] = ()
    gone: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return any(vars(self).values())


def changes(spec: HostSpec, st: HostState) -> Changes:
    drifted = tuple(f for f in spec.files if st.files.get(f.path) != (f.sha256, f.mode)
                    or st.stats.get(f.path, (0, "", ""))[1:] != (f.owner, f.group))
    changed = tuple(f for f in drifted if st.files.get(f.path, ("", -1))[0] != f.sha256)
    reload_units = {f.unit for f in changed if f.unit and not f.restart}
    restart_units = {f.unit for f in changed if f.unit and f.restart}
    # A file newer than its running unit was put in place by a run that stopped before the
    # restart (interrupted, or a failed gate on another unit): this run restarts it, so a rerun
    # resumes. Only for restarts: a reload does not change when a unit became active.
    restart_units |= {f.unit for f in spec.files
                      if f.unit and f.restart and f.path in st.mtimes and f.unit in st.started
                      and st.mtimes[f.path] > st.started[f.unit]}
    unmask, enable, actions = [], [], []
    for u in spec.units:
        props = st.units.get(u, {})
        if props.get("LoadState") == "masked" or props.get("UnitFileState") == "masked":
            unmask.append(u)
        if props.get("UnitFileState") != "enabled":
            enable.append(u)
        if props.get("ActiveState") != "active":
            actions.append((u, "start"))
        elif u in restart_units:
            actions.append((u, "restart"))
        elif u in reload_units:
            actions.append((u, "reload"))
    return Changes(
        packages=tuple(p for p in spec.packages if p not in st.packages),
        sysctls=tuple((k, v) for k, v in spec.sysctls if st.sysctls.get(k) != v),
        dirs=tuple(d for d in spec.dirs if st.stats.get(d.path) != (d.mode, d.owner, d.group)),
        drifted=drifted,
        changed=changed,
        unmask=tuple(unmask),
        enable=tuple(enable),
        unit_actions=tuple(actions),
        retire=tuple(u for u in spec.retired_units
                     if st.units.get(u, {}).get("ActiveState") == "active"
                     or st.units.get(u, {}).get("UnitFileState") == "enabled"),
        gone=tuple(p for p in spec.absent if p in st.files),
    )


def plan(spec: HostSpec, st: HostState) -> list[Step]:
    """Commands that bring a host from ``st`` to ``spec``; empty when it is converged."""
    c = changes(spec, st)
    steps: list[Step] = []
    if c.packages:
        steps.append("DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
                     "-o Dpkg::Options::=--force-confold " + " ".join(c.packages))
    for key, value in c.sysctls:
        setting = f"{key}={shlex.quote(value)}"
        # In a container /proc/sys is often read-only: say so instead of failing obscurely.
        steps.append(f"sysctl -q -w {setting} || {{ echo 'metalseed: cannot set {key} here "
                     f"(read-only /proc/sys?); set it on the host' >&2; exit 1; }}")
    for d in c.dirs:
        steps.append(f"install -d -m {d.mode:04o} -o {d.owner} -g {d.group} {shlex.quote(d.path)}")
    for f in c.drifted:
        steps.extend(_replace_file(f, f not in c.changed))
    if any(f.unit_file for f in c.changed):
        steps.append("systemctl daemon-reload")
    steps += [f"systemctl unmask {u}" for u in c.unmask]
    steps += [f"systemctl enable {u}" for u in c.enable]
    for u, action in c.unit_actions:
        steps.append(f"systemctl {action} {u}")
        if spec.health.get(u):
            steps.append(spec.health[u])
    if c.changed and spec.cleanup:
        steps.append(spec.cleanup)
    steps += [f"systemctl disable --now {u}" for u in c.retire]
    if c.gone:
        steps.append("rm -f " + " ".join(shlex.quote(p) for p in c.gone))
        if any(p.startswith("/etc/systemd/") for p in c.gone):
            steps.append("systemctl daemon-reload")
    return steps


def is_secret(f: ManagedFile) -> bool:
    """Never shown: key material (0600-style files, or anything holding a private key)."""
    return f.mode & 0o077 == 0 or b"PRIVATE KEY" in f.content


def report(c: Changes, current: dict[str, list[str] | None]) -> list[str]:
    """Pure: the lines a run prints for one host before it changes anything. ``current`` holds
    the host's present text of the changed files that may be shown (missing: not shown)."""
    lines = [f"would install packages: {' '.join(c.packages)}"] if c.packages else []
    lines += [f"would set sysctl {k} = {v}" for k, v in c.sysctls]
    lines += [f"would create or fix directory {d.path} ({d.mode:04o} {d.owner}:{d.group})"
              for d in c.dirs]
    for f in c.drifted:
        if f not in c.changed:
            lines.append(f"would fix owner/mode of {f.path} ({f.mode:04o} {f.owner}:{f.group})")
            continue
        before = current.get(f.path)
        if is_secret(f):
            lines.append(f"would change {f.path} (secret: content not shown)")
        elif b"-----BEGIN" in f.content:
            lines.append(f"would change {f.path} (certificate: {len(f.content)} bytes)")
        elif before is None:
            lines.append(f"would create or change {f.path} ({len(f.content)} bytes)")
        else:
            after = f.content.decode(errors="replace").splitlines()
            diff = difflib.unified_diff(before, after, f"{f.path} (now)", f"{f.path} (new)",
                                        lineterm="", n=2)
            lines.append(f"would change {f.path}:")
            lines += [f"    {d}" for d in diff]
    lines += [f"would unmask {u}" for u in c.unmask]
    lines += [f"would {action} {u}" for u, action in c.unit_actions]
    lines += [f"would enable {u}" for u in c.enable if (u, "start") not in c.unit_actions]
    lines += [f"would stop and disable {u}" for u in c.retire]
    lines += [f"would remove {p}" for p in c.gone]
    return lines


def _replace_file(f: ManagedFile, same_content: bool) -> list[Step]:
    path = shlex.quote(f.path)
    mode = f"{f.mode:04o}"
    owned = (f.owner, f.group) != ("root", "root")
    chown = f"chown {f.owner}:{f.group} "
    if same_content:  # only the mode or the owner drifted
        return [f"chown {f.owner}:{f.group} {path} && chmod {mode} {path}"]
    parent = shlex.quote(str(Path(f.path).parent))
    staged = shlex.quote(f.path + STAGED_SUFFIX)
    mkdir = f"install -d -m {f.dir_mode:04o} {parent}" if f.dir_mode is not None else f"mkdir -p {parent}"
    steps: list[Step] = [mkdir]
    if f.mode & 0o077 == 0:
        # A secret: the staged file exists with its final mode and owner before any content
        # arrives (an upload keeps the mode of the file it overwrites).
        owner = f" -o {f.owner} -g {f.group}" if owned else ""
        steps.append(f"install -m {mode}{owner} /dev/null {staged}")
    steps.append(Upload(f.content, f.path + STAGED_SUFFIX))
    steps.append((chown + staged + " && " if owned else "") + f"chmod {mode} {staged}")
    if f.check:
        check = f.check.replace("{path}", staged)
        # A failing check leaves the live file (and the running service) as they were.
        steps.append(f"{check} || {{ rm -f {staged}; echo 'metalseed: {f.path} failed its check "
                     f"and was not installed' >&2; exit 1; }}")
    steps.append(f"mv -f {staged} {path}")
    return steps


def _log_report(spec: HostSpec, st: HostState) -> None:
    """Say, before anything runs (and as all ``pyinfra --dry`` does), what this host would get.
    The present text of a changed file is read only for files that may be shown."""
    c = changes(spec, st)
    if not c:
        return
    current: dict[str, list[str] | None] = {}
    for f in c.changed:
        if f.path in st.files and not is_secret(f) and b"-----BEGIN" not in f.content:
            text = host.get_fact(FileContents, path=f.path)
            if text is not None and not any("PRIVATE KEY" in line for line in text):
                current[f.path] = text
    for line in report(c, current):
        host.log(line, logger.info)


@operation()
def converge(spec: HostSpec) -> Generator[Any, None, None]:
    """Bring this host to ``spec``: one fact command, then only what differs."""
    if spec == HostSpec():
        return  # nothing to manage here: not even the fact's round trip
    args = {
        "paths": tuple(d.path for d in spec.dirs) + tuple(f.path for f in spec.files) + spec.absent,
        "units": spec.units + spec.retired_units,
        "sysctls": tuple(k for k, _ in spec.sysctls),
        "packages": spec.packages,
    }
    # pyinfra 3 runs a fact's command each time it is asked for, and generates an operation twice
    # (prepare, execute). Nothing else in a run touches what one converge manages, so the
    # prepare-time answer is kept: one remote command per run instead of two. (``host`` is a
    # context proxy shared by all hosts: the cache lives on the state.)
    cache: dict[Any, HostState] = host.state.__dict__.setdefault("_metalseed_snapshots", {})
    key = (host.name, *args.values())
    if key not in cache:
        cache[key] = host.get_fact(HostSnapshot, **args)
    st = cache[key]
    if not host.state.is_executing:
        _log_report(spec, st)
    for step in plan(spec, st):
        if isinstance(step, Upload):
            yield FileUploadCommand(io.BytesIO(step.content), step.dest)
        else:
            yield StringCommand(step)
