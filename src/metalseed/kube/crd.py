"""Offline validation of custom resources (Cilium's policies) against the CRD schemas of the pinned
upstream module.

The schemas are the ``openAPIV3Schema`` of each served version of the CRD files in the pinned
module (``pkg/k8s/apis/cilium.io/client/crds/v2/*.yaml`` of github.com/cilium/cilium), bundled by
``metalseed mirror build`` into one data file of the mirror (sha256 in its manifest, checked on
every load; each source file's sha256 pinned in the recipe). Unlike the built-in kinds' OpenAPI,
a CRD's structural schema carries its own constraints (``oneOf``/``anyOf`` alternatives of
required fields, ``enum``, ``pattern``, item counts): the API server enforces them, so does
:func:`problems`.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from metalseed.errors import ArtifactError, KubernetesObjectError, MirrorIntegrityError
from metalseed.kube.openapi import TYPE_NAMES, describe, field_path, strip_descriptions, type_ok

COMPONENT = "cilium-crds"
Schema = dict[str, Any]


def bundle(docs: Iterable[Mapping[str, Any]], version: str) -> dict[str, Any]:
    """``kinds``: ``<group>/<version>/<Kind>`` -> the structural schema of every served version
    of ``docs`` (CustomResourceDefinition objects); ``objects``: the CRDs themselves, without
    their descriptions, as a cluster that runs the Cilium agent is given them."""
    kinds: dict[str, Schema] = {}
    objects: list[Any] = []
    for doc in docs:
        if doc.get("kind") != "CustomResourceDefinition":
            raise ArtifactError(f"not a CustomResourceDefinition: {doc.get('kind')!r}")
        spec = doc["spec"]
        for v in spec["versions"]:
            if v.get("served"):
                kinds[f"{spec['group']}/{v['name']}/{spec['names']['kind']}"] = strip_descriptions(
                    v["schema"]["openAPIV3Schema"])
        objects.append(strip_descriptions(dict(doc)))
    if not kinds:
        raise ArtifactError("no served CRD version to bundle")
    return {"version": version, "kinds": kinds, "objects": objects}


def bundle_files(paths: Iterable[Path], version: str) -> dict[str, Any]:
    return bundle([yaml.safe_load(p.read_text()) for p in paths], version)


@dataclass(frozen=True)
class CRDSchemas:
    version: str
    kinds: dict[str, Schema]
    objects: tuple[Any, ...] = ()
    """The CustomResourceDefinitions (descriptions stripped), in the recipe's order."""


_LOADED: dict[tuple[str, int, str], CRDSchemas] = {}


def load(mirror_dir: Path) -> CRDSchemas:
    """The bundle the mirror's manifest lists, checked against the manifest's sha256."""
    from metalseed.mirror import load_manifest, sha256_file

    found = [a for a in load_manifest(mirror_dir).artifacts
             if a.component == COMPONENT and a.kind == "data"]
    if not found:
        raise ArtifactError(f"the mirror manifest {mirror_dir}/manifest.json has no {COMPONENT} "
                            "(the schemas Cilium policies are validated against): run "
                            f"`metalseed mirror build --only {COMPONENT}`")
    art = found[0]
    path = mirror_dir / art.path
    try:
        key = (str(path), path.stat().st_mtime_ns, art.sha256)
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read the CRD schemas: {e}") from e
    if key not in _LOADED:
        actual = sha256_file(path)
        if actual != art.sha256:
            raise MirrorIntegrityError(f"{art.path}: expected sha256:{art.sha256}, actual "
                                       f"sha256:{actual}")
        doc = json.loads(path.read_text())
        _LOADED[key] = CRDSchemas(doc["version"], doc["kinds"], tuple(doc.get("objects", ())))
    return _LOADED[key]


# --------------------------------------------------------------------------------------------
# Validation (pure)


def problems(obj: Any, schemas: CRDSchemas) -> list[str]:
    if not isinstance(obj, dict):
        return [f"(the object): found {type(obj).__name__}; accepted: a mapping"]
    key = f"{obj.get('apiVersion')}/{obj.get('kind')}"
    schema = schemas.kinds.get(key)
    if schema is None:
        close = difflib.get_close_matches(key, sorted(schemas.kinds), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return [f"apiVersion/kind: found {key!r}; accepted: a kind of the bundled CRDs{hint}"]
    out: list[str] = []
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        out.append("metadata.name: missing; accepted: the object's name")
    _check(obj, schema, "", out)
    return out


def validate(objects: Iterable[Any], schemas: CRDSchemas) -> None:
    found = [f"{describe(o)}: {p}" for o in objects for p in problems(o, schemas)]
    if found:
        raise KubernetesObjectError(found, f"CRD {schemas.version}")


def _check(value: Any, node: Schema, path: str, out: list[str]) -> None:
    where = path or "(the object)"
    if value is None:
        return
    # Alternatives are judged on their own: an alternative that fails only adds nothing.
    for word, exactly_one in (("oneOf", True), ("anyOf", False)):
        alts = node.get(word)
        if alts:
            ok = sum(1 for a in alts if not _sub(value, a, path))
            if (exactly_one and ok != 1) or (not exactly_one and ok == 0):
                alt = [sorted(a.get("required") or []) or a.get("type") for a in alts]
                want = "exactly one" if exactly_one else "at least one"
                out.append(f"{where}: matches {ok} of {word} {alt}; accepted: {want}")
    if node.get("x-kubernetes-int-or-string"):
        if not (type_ok(value, "integer") or type_ok(value, "string")):
            out.append(f"{where}: found {value!r}; accepted: an integer or a string")
        elif isinstance(value, str):
            _scalar(value, node, where, out)
        return
    type_ = node.get("type")
    if type_ is None:
        return
    if not type_ok(value, type_):
        shown = value if not isinstance(value, (dict, list)) else type(value).__name__
        out.append(f"{where}: found {shown!r}; accepted: {TYPE_NAMES.get(type_, type_)}")
        return
    if type_ == "array":
        n = len(value)
        if "maxItems" in node and n > node["maxItems"]:
            out.append(f"{where}: {n} items; accepted: at most {node['maxItems']}")
        if "minItems" in node and n < node["minItems"]:
            out.append(f"{where}: {n} items; accepted: at least {node['minItems']}")
        items = node.get("items")
        if items:
            for i, item in enumerate(value):
                _check(item, items, f"{path}[{i}]", out)
    elif type_ == "object":
        _object(value, node, path, out)
    else:
        _scalar(value, node, where, out)


def _sub(value: Any, node: Schema, path: str) -> list[str]:
    out: list[str] = []
    if isinstance(value, dict):
        out += [f"{field_path(path, k)}: missing" for k in node.get("required") or [] if k not in value]
    if "type" in node or "oneOf" in node or "anyOf" in node:
        _check(value, node, path, out)
    return out


def _scalar(value: Any, node: Schema, where: str, out: list[str]) -> None:
    if "enum" in node and value not in node["enum"]:
        out.append(f"{where}: found {value!r}; accepted: one of {node['enum']}")
    if isinstance(value, str):
        pattern = node.get("pattern")
        # Go's RE2 and Python's re agree on the patterns CRDs use (anchors, classes, alternation).
        if pattern and not re.search(pattern, value):
            out.append(f"{where}: found {value!r}; accepted: a string matching {pattern!r}")
        if "maxLength" in node and len(value) > node["maxLength"]:
            out.append(f"{where}: {len(value)} characters; accepted: at most {node['maxLength']}")
    elif isinstance(value, (int, float)):
        if "minimum" in node and value < node["minimum"]:
            out.append(f"{where}: found {value!r}; accepted: at least {node['minimum']}")
        if "maximum" in node and value > node["maximum"]:
            out.append(f"{where}: found {value!r}; accepted: at most {node['maximum']}")


def _object(value: dict[str, Any], node: Schema, path: str, out: list[str]) -> None:
    props: dict[str, Schema] = node.get("properties") or {}
    extra = node.get("additionalProperties")
    free = node.get("x-kubernetes-preserve-unknown-fields") or (not props and extra is None)
    for key in node.get("required") or []:
        if key not in value:
            out.append(f"{field_path(path, key)}: missing; accepted: a required field")
    for key, item in value.items():
        if key in props:
            _check(item, props[key], field_path(path, key), out)
        elif isinstance(extra, dict):
            _check(item, extra, field_path(path, key), out)
        elif not free:
            close = difflib.get_close_matches(str(key), sorted(props), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            out.append(f"{field_path(path, key)}: unknown field; accepted: {hint}the fields: "
                       f"{', '.join(sorted(props))}")
