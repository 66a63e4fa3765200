"""The ``metalseed`` command: lab, pki, certs."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from metalseed.errors import MetalseedError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metalseed",
        description="Highly available bare-metal Kubernetes with pyinfra: lab, PKI, certificates.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from metalseed.lab import cli as lab_cli
    from metalseed.mirror import cli as mirror_cli
    from metalseed.pki import cli as pki_cli
    from metalseed.tenants import cli as tenants_cli

    lab_cli.register(sub)
    pki_cli.register(sub)
    mirror_cli.register(sub)
    tenants_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a reader that left (`| head`) is seen here
        return code
    except BrokenPipeError:
        # The reader took what it wanted and left: not an error. stdout goes to /dev/null so
        # the interpreter's last flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except MetalseedError as e:
        print(f"metalseed: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("metalseed: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
