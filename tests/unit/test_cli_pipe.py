"""`metalseed … | head` ends quietly: a reader that leaves early is not an error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_a_closed_pipe_ends_the_command_quietly(tmp_path: Path) -> None:
    # Enough certificates that the table is larger than a pipe's buffer (64 KiB).
    workers = [(f"w{i}", {"ssh_hostname": f"10.20.{i // 200}.{i % 200 + 20}"}) for i in range(500)]
    data = {"cluster_name": "big", "node_network": "10.20.0.0/16", "vip": "10.20.0.10",
            "pki_store": str(tmp_path / "pki")}
    inv = tmp_path / "big.py"
    inv.write_text(f"masters = [('m1', {{'ssh_hostname': '10.20.0.11'}})]\n"
                   f"workers = {workers!r}\nall = (masters + workers, {data!r})\n")
    cli = [sys.executable, "-m", "metalseed.cli"]
    init = subprocess.run([*cli, "pki", "init", str(inv)], capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
    full = subprocess.run([*cli, "pki", "show", str(inv)], capture_output=True, text=True)
    assert len(full.stdout) > 80 * 1024, len(full.stdout)
    piped = subprocess.run(f"{' '.join(cli)} pki show {inv} | head -2", shell=True,
                           capture_output=True, text=True, executable="/bin/bash")
    first, header = piped.stdout.splitlines()
    assert first.startswith(f"PKI store {tmp_path / 'pki' / 'big'} (cluster big), ")  # then the time
    assert header == full.stdout.splitlines()[1]
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr, piped.stderr
