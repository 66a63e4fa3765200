"""What a run says it would change on a host (``pyinfra --dry``), from the converge plan."""

from __future__ import annotations

from metalseed.deploys import converge as cv
from metalseed.deploys.converge import (
    HostSpec,
    HostState,
    ManagedFile,
    changes,
    converged_snapshot,
    parse_snapshot,
    report,
)
from metalseed.deploys.summary import inventory_argument

KEYISH = b"-----BEGIN " + b"PRIVATE KEY-----\nc2VjcmV0\n-----END " + b"PRIVATE KEY-----\n"


def spec(conf: bytes, key: bytes = KEYISH) -> HostSpec:
    return HostSpec(
        packages=("nginx",),
        files=(ManagedFile("/etc/app.conf", conf, unit="app.service"),
               ManagedFile("/etc/app/key.pem", key, mode=0o600, unit="app.service"),
               ManagedFile("/etc/app/ca.crt", b"-----BEGIN CERTIFICATE-----\nQ0E=\n"
                                              b"-----END CERTIFICATE-----\n")),
        units=("app.service",),
    )


def converged(s: HostSpec) -> HostState:
    return parse_snapshot(converged_snapshot(s))


def test_a_converged_host_reports_nothing() -> None:
    s = spec(b"a\nb\n")
    assert not changes(s, converged(s))
    assert report(changes(s, converged(s)), {}) == []


def test_a_changed_text_file_is_shown_as_a_diff_and_its_unit_reloads() -> None:
    old = spec(b"listen 80;\nworkers 1;\n")
    new = spec(b"listen 80;\nworkers 2;\n")
    lines = report(changes(new, converged(old)), {"/etc/app.conf": ["listen 80;", "workers 1;"]})
    assert lines[0] == "would change /etc/app.conf:"
    assert "    -workers 1;" in lines and "    +workers 2;" in lines
    assert lines[-1] == "would reload app.service"


def test_secrets_and_certificates_are_never_shown() -> None:
    old = spec(b"x\n")
    new = spec(b"x\n", key=KEYISH.replace(b"c2VjcmV0", b"bmV3c2VjcmV0"))
    st = converged(old)
    st.files["/etc/app/ca.crt"] = ("0" * 64, 0o644)
    lines = report(changes(new, st), {})
    text = "\n".join(lines)
    assert "would change /etc/app/key.pem (secret: content not shown)" in lines
    assert "would change /etc/app/ca.crt (certificate: " in text
    assert "PRIVATE KEY" not in text and "bmV3c2VjcmV0" not in text and "c2VjcmV0" not in text


def test_a_bare_host_gets_packages_files_and_a_start() -> None:
    s = spec(b"a\n")
    lines = report(changes(s, HostState()), {})
    assert lines[0] == "would install packages: nginx"
    assert "would create or change /etc/app.conf (2 bytes)" in lines
    assert lines[-1] == "would start app.service"  # enabling is part of a first start


def test_the_inventory_is_found_among_pyinfras_arguments() -> None:
    assert inventory_argument(["pyinfra", "-y", "inventory/lab.py", "deploys/cluster.py"]) == \
        "inventory/lab.py"
    assert inventory_argument(["pyinfra", "--data", "x=1", "inv.py", "d.py"]) == "inv.py"
    assert inventory_argument(["python"]) == "INVENTORY"


def test_a_file_newer_than_its_running_unit_restarts_it() -> None:
    """A run stopped between moving a file into place and restarting its unit is resumed by the
    next run, which sees nothing to upload but a unit started before its file changed."""
    f = cv.ManagedFile("/etc/x/cert.crt", b"new", unit="x.service", restart=True)
    reloaded = cv.ManagedFile("/etc/x/x.conf", b"conf", unit="y.service")
    spec = cv.HostSpec(files=(f, reloaded), units=("x.service", "y.service"))
    lines = [
        "[sha]", f"{f.sha256}  {f.path}", f"{reloaded.sha256}  {reloaded.path}",
        "[mode]", f"644 root root {f.path}", f"644 root root {reloaded.path}",
        "[mtime]", f"1700000100 {f.path}", f"1700000100 {reloaded.path}",
        "[units]",
        "Id=x.service", "LoadState=loaded", "UnitFileState=enabled", "ActiveState=active", "",
        "Id=y.service", "LoadState=loaded", "UnitFileState=enabled", "ActiveState=active", "",
        "[started]", "Id=x.service", "ActiveEnterTimestamp=@1700000050", "",
        "Id=y.service", "ActiveEnterTimestamp=@1700000050",
    ]
    st = cv.parse_snapshot(lines)
    assert st.started == {"x.service": 1700000050, "y.service": 1700000050}
    assert cv.changes(spec, st).unit_actions == (("x.service", "restart"),)  # not the reload
    after = cv.parse_snapshot([*lines[:-4], "Id=x.service", "ActiveEnterTimestamp=@1700000100"])
    assert cv.plan(spec, after) == []  # started in the same second as the file: converged
    # A systemd that cannot say when a unit started: only changed files restart it.
    assert cv.plan(spec, cv.parse_snapshot(lines[:lines.index("[started]")])) == []
