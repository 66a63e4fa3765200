"""The one jinja2 environment every renderer uses: templates under ``files/<component>/*.j2``.

``files/`` is the repository's top-level folder (``src/metalseed/files`` links to it, so the wheel
ships it as package data). ``StrictUndefined`` turns a missing variable into an error at render
time instead of an empty string in a host's config; ``keep_trailing_newline`` keeps the text byte
for byte what the template says. Nothing here touches a host.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jinja2

FILES_DIR = Path(__file__).resolve().parent.parent / "files"


@cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(FILES_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # config files, not HTML
    )


def render(name: str, **context: Any) -> str:
    """Render ``files/<name>`` (e.g. ``edge/nginx.conf.j2``) with ``context``."""
    return environment().get_template(name).render(**context)
