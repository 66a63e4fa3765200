"""The mirror settings of the model: mirror_url (where hosts download) and mirror_dir (the operator's
copy of the manifest every download is checked against)."""

from __future__ import annotations

from pathlib import Path

import pytest

from metalseed.mirror import default_root
from metalseed.model import build_cluster

from .test_model import hosts, rejects


def test_no_mirror_by_default() -> None:
    c = build_cluster(hosts())
    assert c.mirror_url is None
    assert c.mirror_dir == default_root()


@pytest.mark.parametrize("url, kept", [
    ("http://10.213.7.1:5080", "http://10.213.7.1:5080"),
    ("http://10.213.7.1:5080/", "http://10.213.7.1:5080"),
    ("https://mirror.example.com", "https://mirror.example.com"),
])
def test_mirror_url_is_scheme_host_and_port(url: str, kept: str) -> None:
    c = build_cluster(hosts(common={"mirror_url": url, "mirror_dir": "/srv/mirror"}))
    assert c.mirror_url == kept
    assert c.mirror_dir == Path("/srv/mirror")


@pytest.mark.parametrize("bad", [
    "10.213.7.1:5080",              # no scheme
    "ftp://10.213.7.1",
    "http://10.213.7.1:5080/files",  # files and registry paths are ours to add
    "http://10.213.7.1:99999",
    "http://user:pw@10.213.7.1",     # credentials do not belong in inventory data
    "http://",
    5080,
])
def test_bad_mirror_urls_are_refused(bad: object) -> None:
    e = rejects("mirror_url", common={"mirror_url": bad})
    assert e.found == bad
    assert "http(s) URL of host and port only" in e.accepted


def test_mirror_url_is_cluster_wide() -> None:
    e = rejects("mirror_url", host="w1", per_host={"w1": {"mirror_url": "http://10.20.0.1:5080"}})
    assert "the same value on every host" in e.accepted


def test_mirror_dir_must_be_a_path() -> None:
    rejects("mirror_dir", common={"mirror_dir": ""})
