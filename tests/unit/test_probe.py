"""The pyinfra results-table parser the lab tests and benches rely on."""

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
