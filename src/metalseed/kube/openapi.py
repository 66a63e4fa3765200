"""Offline validation of cluster objects against the pinned Kubernetes' OpenAPI v3 schemas.

The schemas are ``api/openapi-spec/v3/*.json`` of the pinned k8s.io/kubernetes module, bundled by
``metalseed mirror build`` into one data file of the mirror (sha256 in its manifest, checked on
every load). :func:`validate` refuses what the API server would refuse for its shape -- an
unknown apiVersion or kind, an unknown field, a wrong type, a missing required field -- naming
the object and the field path, before any host is touched. It does not replace the server's own
semantic validation (names, ranges, immutable fields); the server-side dry run does that.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metalseed.errors import ArtifactError, KubernetesObjectError, MirrorIntegrityError

COMPONENT = "kubernetes-openapi"
_REF = "#/components/schemas/"
_INT32 = (-(2**31), 2**31 - 1)

Schema = dict[str, Any]


# --------------------------------------------------------------------------------------------
# The bundle (built into the mirror)


def strip_descriptions(node: Any) -> Any:
    # Descriptions are three quarters of the bytes and never decide validity.
    if isinstance(node, dict):
        return {k: strip_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def bundle(spec_dir: Path, version: str) -> dict[str, Any]:
    """Every ``components.schemas`` entry of the spec's files, one copy each, and the map from
    ``<apiVersion>/<kind>`` to the schema of that kind. A schema that several group-version files
    carry (DeleteOptions, WatchEvent) differs only in its group-version-kind list: those merge."""
    files = sorted(spec_dir.glob("*.json"))
    if not files:
        raise ArtifactError(f"no OpenAPI v3 files under {spec_dir}")
    schemas: dict[str, Schema] = {}
    for f in files:
        doc = json.loads(f.read_text())
        for name, schema in (doc.get("components") or {}).get("schemas", {}).items():
            schema = strip_descriptions(schema)
            if name not in schemas:
                schemas[name] = schema
                continue
            gvks = schemas[name].get("x-kubernetes-group-version-kind", [])
            for g in schema.get("x-kubernetes-group-version-kind", []):
                if g not in gvks:
                    gvks.append(g)
    kinds: dict[str, str] = {}
    for name, schema in sorted(schemas.items()):
        props = schema.get("properties") or {}
        if "apiVersion" not in props or "kind" not in props:
            continue  # meta types listed under every group (DeleteOptions...) are not objects
        gvks = schema.get("x-kubernetes-group-version-kind") or []
        if len(gvks) != 1:
            continue
        g = gvks[0]
        api_version = f"{g['group']}/{g['version']}" if g["group"] else g["version"]
        kinds[f"{api_version}/{g['kind']}"] = name
    return {"version": version, "kinds": kinds, "schemas": schemas}


# --------------------------------------------------------------------------------------------
# Loading the mirror's copy


@dataclass(frozen=True)
class Schemas:
    version: str
    kinds: dict[str, str]
    schemas: dict[str, Schema]


_LOADED: dict[tuple[str, int, str], Schemas] = {}


def load(mirror_dir: Path) -> Schemas:
    """The bundle the mirror's manifest lists, checked against the manifest's sha256."""
    from metalseed.mirror import load_manifest, sha256_file

    manifest = load_manifest(mirror_dir)
    found = [a for a in manifest.artifacts if a.component == COMPONENT and a.kind == "data"]
    if not found:
        raise ArtifactError(f"the mirror manifest {mirror_dir}/manifest.json has no {COMPONENT} "
                            "(the schemas cluster objects are validated against): run "
                            "`metalseed mirror build`")
    art = found[0]
    path = mirror_dir / art.path
    try:
        key = (str(path), path.stat().st_mtime_ns, art.sha256)
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read the Kubernetes schemas: {e}") from e
    if key not in _LOADED:
        actual = sha256_file(path)
        if actual != art.sha256:
            raise MirrorIntegrityError(f"{art.path}: expected sha256:{art.sha256}, actual "
                                       f"sha256:{actual}")
        doc = json.loads(path.read_text())
        _LOADED[key] = Schemas(doc["version"], doc["kinds"], doc["schemas"])
    return _LOADED[key]


# --------------------------------------------------------------------------------------------
# Validation (pure)


def describe(obj: Any) -> str:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    kind = obj.get("kind", "?") if isinstance(obj, dict) else "?"
    return f"{kind} {ns}{meta.get('name', '?')}"


def problems(obj: Any, schemas: Schemas) -> list[str]:
    """What is wrong with one object, each as ``<field path>: found ...; accepted: ...``."""
    if not isinstance(obj, dict):
        return [f"(the object): found {type(obj).__name__}; accepted: a mapping"]
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    name = schemas.kinds.get(f"{api_version}/{kind}")
    if name is None:
        return [_unknown_kind(api_version, kind, schemas)]
    out: list[str] = []
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        # Not required by the schema (generateName), but server-side apply addresses by name.
        out.append("metadata.name: missing; accepted: the object's name (server-side apply "
                   "addresses objects by name)")
    _check(obj, {"$ref": _REF + name}, "", schemas, out)
    return out


def validate(objects: Iterable[Any], schemas: Schemas) -> None:
    """Raise KubernetesObjectError listing every problem of every object (none: returns)."""
    found = [f"{describe(o)}: {p}" for o in objects for p in problems(o, schemas)]
    if found:
        raise KubernetesObjectError(found, schemas.version)


def _unknown_kind(api_version: object, kind: object, schemas: Schemas) -> str:
    versions = sorted(k.rsplit("/", 1)[0] for k in schemas.kinds if k.rsplit("/", 1)[1] == kind)
    if versions:
        return (f"apiVersion: found {api_version!r}; accepted: for kind {kind!r}, "
                f"{', '.join(versions)}")
    all_kinds = sorted({k.rsplit("/", 1)[1] for k in schemas.kinds})
    close = difflib.get_close_matches(str(kind), all_kinds, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (f"kind: found {kind!r}; accepted: a kind of Kubernetes {schemas.version}{hint}")


def _resolve(node: Schema, schemas: Schemas) -> tuple[Schema, str]:
    """Follow ``$ref`` and the single-``allOf`` wrapper Kubernetes puts around references."""
    name = ""
    for _ in range(32):
        if "$ref" in node:
            name = node["$ref"].removeprefix(_REF)
            node = schemas.schemas[name]
        elif len(node.get("allOf") or []) == 1 and "properties" not in node and "type" not in node:
            node = node["allOf"][0]
        else:
            return node, name
    raise ValueError(f"schema references nest too deep at {name}")


TYPE_NAMES = {"string": "a string", "integer": "an integer", "number": "a number",
          "boolean": "true or false", "object": "a mapping", "array": "a list"}


def type_ok(value: Any, type_: str) -> bool:
    if type_ == "string":
        return isinstance(value, str)
    if type_ == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_ == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if type_ == "boolean":
        return isinstance(value, bool)
    if type_ == "object":
        return isinstance(value, dict)
    if type_ == "array":
        return isinstance(value, list)
    return True


def field_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _check(value: Any, node: Schema, path: str, schemas: Schemas, out: list[str]) -> None:
    node, name = _resolve(node, schemas)
    where = path or "(the object)"
    if value is None:
        return  # JSON null: "unset", as the API server reads it
    alternatives = node.get("oneOf")
    if alternatives:  # IntOrString, Quantity: one of a few scalar types
        types = [a.get("type") for a in alternatives]
        if not any(type_ok(value, t) for t in types if t):
            accepted = " or ".join(TYPE_NAMES.get(t, t) for t in types if t)
            out.append(f"{where}: found {value!r}; accepted: {accepted}")
        return
    type_ = node.get("type")
    if type_ is None:
        return  # free-form (JSON, RawExtension)
    if not type_ok(value, type_):
        shown = value if not isinstance(value, (dict, list)) else type(value).__name__
        out.append(f"{where}: found {shown!r}; accepted: {TYPE_NAMES.get(type_, type_)}")
        return
    if type_ == "integer" and node.get("format") == "int32" and not _INT32[0] <= value <= _INT32[1]:
        out.append(f"{where}: found {value!r}; accepted: a 32-bit integer")
    elif type_ == "array":
        items = node.get("items")
        if items:
            for i, item in enumerate(value):
                _check(item, items, f"{path}[{i}]", schemas, out)
    elif type_ == "object":
        _check_object(value, node, name, path, schemas, out)


def _check_object(value: dict[str, Any], node: Schema, name: str, path: str, schemas: Schemas,
                  out: list[str]) -> None:
    props: dict[str, Schema] = node.get("properties") or {}
    extra = node.get("additionalProperties")
    free = node.get("x-kubernetes-preserve-unknown-fields") or (not props and extra is None)
    of = f" of {name}" if name else ""
    for key in node.get("required") or []:
        if key not in value:
            out.append(f"{field_path(path, key)}: missing; accepted: a required field{of}")
    for key, item in value.items():
        if key in props:
            _check(item, props[key], field_path(path, key), schemas, out)
        elif isinstance(extra, dict):
            _check(item, extra, field_path(path, key), schemas, out)
        elif not free:
            close = difflib.get_close_matches(str(key), sorted(props), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            out.append(f"{field_path(path, key)}: unknown field; accepted: {hint}the fields{of}: "
                       f"{', '.join(sorted(props))}")
