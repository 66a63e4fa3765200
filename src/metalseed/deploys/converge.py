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

Used by the edge, the lab ingress stand-in and the certificate-check timer.
"""

from __future__ import annotations

import hashlib
import io
import shlex
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, StringCommand, operation

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
                  f"stat -c '%a %U %G %n' {q} 2>/dev/null"]
    if units:
        parts += ["echo '[units]'",
                  "systemctl show -p Id,LoadState,UnitFileState,ActiveState "
                  + " ".join(shlex.quote(u) for u in units)]
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
            st.units[unit["Id"]] = dict(unit)
        unit.clear()

    for raw in lines:
        line = raw.rstrip("\n")
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if section == "sha" and "  " in line:
            sha, path = line.split("  ", 1)
            shas[path] = sha
        elif section == "mode" and line.count(" ") >= 3:
            mode, owner, group, path = line.split(" ", 3)
            st.stats[path] = (int(mode, 8), owner, group)
        elif section == "units":
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


def plan(spec: HostSpec, st: HostState) -> list[Step]:
    """Commands that bring a host from ``st`` to ``spec``; empty when it is converged."""
    steps: list[Step] = []
    missing = [p for p in spec.packages if p not in st.packages]
    if missing:
        steps.append("DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
                     "-o Dpkg::Options::=--force-confold " + " ".join(missing))
    for key, value in spec.sysctls:
        if st.sysctls.get(key) != value:
            setting = f"{key}={shlex.quote(value)}"
            # In a container /proc/sys is often read-only: say so instead of failing obscurely.
            steps.append(f"sysctl -q -w {setting} || {{ echo 'metalseed: cannot set {key} here "
                         f"(read-only /proc/sys?); set it on the host' >&2; exit 1; }}")

    for d in spec.dirs:
        if st.stats.get(d.path) != (d.mode, d.owner, d.group):
            steps.append(f"install -d -m {d.mode:04o} -o {d.owner} -g {d.group} {shlex.quote(d.path)}")
    drifted = [f for f in spec.files if st.files.get(f.path) != (f.sha256, f.mode)
               or st.stats.get(f.path, (0, "", ""))[1:] != (f.owner, f.group)]
    changed = [f for f in drifted if st.files.get(f.path, ("", -1))[0] != f.sha256]
    for f in drifted:
        steps.extend(_replace_file(f, f not in changed))
    if any(f.unit_file for f in changed):
        steps.append("systemctl daemon-reload")

    reload_units = {f.unit for f in changed if f.unit and not f.restart}
    restart_units = {f.unit for f in changed if f.unit and f.restart}
    for u in spec.units:
        props = st.units.get(u, {})
        if props.get("LoadState") == "masked" or props.get("UnitFileState") == "masked":
            steps.append(f"systemctl unmask {u}")
        if props.get("UnitFileState") != "enabled":
            steps.append(f"systemctl enable {u}")
        health = spec.health.get(u)
        if props.get("ActiveState") != "active":
            steps.append(f"systemctl start {u}")
        elif u in restart_units:
            steps.append(f"systemctl restart {u}")
        elif u in reload_units:
            steps.append(f"systemctl reload {u}")
        else:
            health = None
        if health:
            steps.append(health)
    if changed and spec.cleanup:
        steps.append(spec.cleanup)
    for u in spec.retired_units:
        props = st.units.get(u, {})
        if props.get("ActiveState") == "active" or props.get("UnitFileState") == "enabled":
            steps.append(f"systemctl disable --now {u}")
    gone = [p for p in spec.absent if p in st.files]
    if gone:
        steps.append("rm -f " + " ".join(shlex.quote(p) for p in gone))
        if any(p.startswith("/etc/systemd/") for p in gone):
            steps.append("systemctl daemon-reload")
    return steps


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
    for step in plan(spec, st):
        if isinstance(step, Upload):
            yield FileUploadCommand(io.BytesIO(step.content), step.dest)
        else:
            yield StringCommand(step)
