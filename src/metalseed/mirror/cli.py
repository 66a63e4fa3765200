"""``metalseed mirror build|show|verify|serve``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metalseed.mirror import ENV, default_root, load_manifest, verify


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("mirror", help="pinned artifacts for air-gapped hosts: build, show, verify, serve")
    msub = p.add_subparsers(dest="mirror_command", required=True, metavar="ACTION")
    root_help = f"mirror root (default ${ENV} or /var/cache/metalseed/mirror)"

    b = msub.add_parser("build", help="build every pinned component from the Go module proxy (cached)")
    b.add_argument("--cache", type=Path, default=None, help=root_help)
    b.add_argument("--only", action="append", default=None, metavar="COMPONENT", help="build just these")
    b.set_defaults(func=_build)

    s = msub.add_parser("show", help="print the manifest as a table")
    s.add_argument("--root", type=Path, default=None, help=root_help)
    s.set_defaults(func=_show)

    v = msub.add_parser("verify", help="check every file against the manifest (exit 1 on a mismatch)")
    v.add_argument("--root", type=Path, default=None, help=root_help)
    v.set_defaults(func=_verify)

    sv = msub.add_parser("serve", help="serve files under /files/ and a read-only registry under /v2/")
    sv.add_argument("--root", type=Path, default=None, help=root_help)
    sv.add_argument("--listen", default="127.0.0.1:5000", metavar="ADDR:PORT")
    sv.set_defaults(func=_serve)


def _root(path: Path | None) -> Path:
    return path if path is not None else default_root()


def _build(args: argparse.Namespace) -> int:
    from metalseed.mirror.build import Builder

    Builder(_root(args.cache)).build(only=args.only)
    return 0


def _show(args: argparse.Namespace) -> int:
    m = load_manifest(_root(args.root))
    rows: list[tuple[str, ...]] = [("NAME", "VERSION", "KIND", "SOURCE", "SIZE", "SHA256", "PATH / IMAGE")]
    for a in m.artifacts:
        rows.append((a.name, a.version, a.kind, a.source, _size(a.size), a.sha256[:12], a.image or a.path))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
    root = _root(args.root)
    # Multi-call names are links to one file: count each file once.
    total = sum(a.size for a in m.artifacts if not (root / a.path).is_symlink())
    print(f"{len(m.artifacts)} artifacts, {_size(total)} on disk (links counted once)")
    return 0


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _verify(args: argparse.Namespace) -> int:
    root = _root(args.root)
    m = load_manifest(root)
    problems = verify(root, m)
    for p in problems:
        print(f"mirror verify: MISMATCH {p}", file=sys.stderr)
    good = len(m.artifacts) - len(problems)
    print(f"mirror verify: {good}/{len(m.artifacts)} artifacts match the manifest")
    return 1 if problems else 0


def _serve(args: argparse.Namespace) -> int:
    from metalseed.mirror.server import parse_listen, serve

    host, port = parse_listen(args.listen)
    serve(_root(args.root), host, port)
    return 0
