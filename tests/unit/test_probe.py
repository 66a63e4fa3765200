"""The pyinfra results-table parser and the deploy runner the lab tests and benches rely on."""

import pytest

from metalseed.probe import pyinfra_totals

TABLE = """--> Results:
    Operation                    Hosts   Success   Error   No Change
    etcd | Install etcd          3       -         -       3
    \x1b[1mGrand total\x1b[0m                  31      6         -       25

--> Disconnecting from hosts...
"""


def test_grand_total_row() -> None:
    assert pyinfra_totals(TABLE) == {"hosts": 31, "success": 6, "error": 0, "no_change": 25}


def test_no_table() -> None:
    assert pyinfra_totals("--> Connecting\nError: no hosts\n") == {}


def test_a_failed_lab_deploy_says_why_not_only_where() -> None:
    from pyinfra.api import Inventory, deploy
    from pyinfra.operations import python

    from metalseed.errors import DeployError, EtcdError
    from metalseed.etcdprobe import run_deploy

    def fails(state: object, host: object) -> None:
        raise EtcdError("snapshot on m3 failed: context deadline exceeded")

    @deploy("fails")
    def failing() -> None:
        python.call(name="snapshot", function=fails)

    inventory = Inventory((["@fake/m3"], {}))
    why = r"(?s)failing failed on \['@fake/m3'\]:\n.*Python callback: .*context deadline"
    with pytest.raises(DeployError, match=why):
        run_deploy(inventory, failing)


def test_a_run_pyinfra_gives_up_on_is_a_failure_even_when_it_names_no_host(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import pyinfra.api.operations
    from pyinfra.api import Inventory, deploy
    from pyinfra.api.exceptions import PyinfraError
    from pyinfra.operations import server

    from metalseed.errors import DeployError
    from metalseed.etcdprobe import run_deploy

    def gives_up(state: object) -> None:
        raise PyinfraError("No hosts remaining!")

    monkeypatch.setattr(pyinfra.api.operations, "run_ops", gives_up)

    @deploy("noop")
    def noop() -> None:
        server.shell(name="nothing", commands=["true"])

    with pytest.raises(DeployError, match=r"(?s)noop failed on \['\(the run\)'\].*No hosts"):
        run_deploy(Inventory((["@fake/m1"], {})), noop)
