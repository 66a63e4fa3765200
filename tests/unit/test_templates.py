"""The files/ templates: every render equals its golden byte for byte, every template is used, and
a missing variable is an error, never an empty string in a host's config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import pytest

from metalseed.render import templates
from tests.unit.golden_render import GOLDEN, all_renders

RENDERS = all_renders()


@pytest.mark.parametrize("name", sorted(RENDERS))
def test_render_equals_its_golden(name: str) -> None:
    golden = GOLDEN / name
    assert golden.is_file(), f"no golden for {name}: python -m tests.unit.golden_render --write"
    assert RENDERS[name].encode() == golden.read_bytes()


def test_every_golden_is_still_rendered() -> None:
    goldens = {str(p.relative_to(GOLDEN)) for p in GOLDEN.rglob("*") if p.is_file()}
    assert goldens == set(RENDERS)


def _used_templates(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[dict[str, Any]]]:
    """Template name -> the contexts the renderers gave it, over every golden render."""
    env = templates.environment()
    real = env.get_template
    used: dict[str, list[dict[str, Any]]] = {}

    class Recording:
        def __init__(self, name: str) -> None:
            self.name, self.template = name, real(name)

        def render(self, **context: Any) -> str:
            used.setdefault(self.name, []).append(context)
            return self.template.render(**context)

    monkeypatch.setattr(env, "get_template", Recording)
    assert all_renders() == RENDERS
    return used


def test_every_template_is_used_by_a_renderer(monkeypatch: pytest.MonkeyPatch) -> None:
    files = {str(p.relative_to(templates.FILES_DIR)) for p in templates.FILES_DIR.rglob("*.j2")}
    assert files, templates.FILES_DIR
    used = set(_used_templates(monkeypatch))
    assert not files - used, (
        f"templates no golden render uses: {sorted(files - used)}; add the renderer's call to "
        "renders() in tests/unit/golden_render.py, then `python -m tests.unit.golden_render --write`")
    assert used <= files


def test_a_missing_variable_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each variable a renderer passes, left out in turn, fails the render (StrictUndefined) in
    at least one of the inventories (a variable of an ``if`` branch only where the branch is taken)."""
    used = _used_templates(monkeypatch)
    monkeypatch.undo()
    checked = 0
    for name, contexts in used.items():
        template = templates.environment().get_template(name)
        for key in {k for c in contexts for k in c}:
            raised = 0
            for context in contexts:
                try:
                    template.render(**{k: v for k, v in context.items() if k != key})
                except jinja2.UndefinedError as e:
                    assert key in str(e)
                    raised += 1
            assert raised, f"{name}: rendered without {key!r}"
            checked += 1
    assert checked > 20


def test_strict_undefined_also_for_attributes() -> None:
    with pytest.raises(jinja2.UndefinedError):
        templates.render("etcd/etcdctl.env.j2", path="/x", endpoint="https://127.0.0.1:2379",
                         pki=object())


def test_templates_ship_inside_the_package() -> None:
    # src/metalseed/files links to the top-level files/, which the wheel holds as package data.
    assert templates.FILES_DIR.resolve() == (Path(__file__).resolve().parents[2] / "files")
