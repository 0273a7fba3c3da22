#!/usr/bin/env python3
"""Validate custom resources (e.g. ServiceMonitor, PrometheusRule) offline
against the openAPIV3Schema of their CustomResourceDefinition.

Usage:
  validate-crd.py --crd CRD.yaml [--crd CRD2.yaml ...] [--strict] FILE [FILE ...]
  helm template x chart/ | validate-crd.py --crd a.yaml --crd b.yaml -

Only documents whose apiVersion/kind match one of the given CRDs are checked;
everything else is counted as skipped. Exit status: 0 all matched resources
valid, 1 a resource failed (or the input held no document at all, which is
almost always a broken pipe upstream), 2 bad usage / unreadable CRD.

--strict rejects fields the schema does not declare (what the API server
does for `kubectl apply --validate=strict`, kubectl's default since 1.27)
instead of ignoring them; objects marked x-kubernetes-preserve-unknown-fields
stay open. CEL rules (x-kubernetes-validations) are not evaluated; their
count is reported.

Needs: PyYAML, jsonschema.

Copied into this repository from the Sentinel team's shared tools folder,
unmodified but for this paragraph (sha256 of that original:
c9e099ae6f6b2ade45a592693c0a574ac67846b14b922d3993de1b8e839b694c), so that
the chart tests need nothing beside the repository. The CRDs it is run
against are in tests/schemas/ (see SOURCE.txt there). Licence: this
repository's (Apache-2.0).
"""
import argparse
import copy
import sys

import jsonschema
import yaml


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as strings, like the API server sees them."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_docs(path):
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
    try:
        for doc in yaml.load_all(stream, Loader=_Loader):
            if doc is None:
                continue
            if isinstance(doc, dict) and doc.get("kind") == "List":
                for item in doc.get("items") or []:
                    yield item
            else:
                yield doc
    finally:
        if stream is not sys.stdin:
            stream.close()


def to_jsonschema(node, strict, stats):
    """Turn a Kubernetes structural OpenAPI v3 schema into a draft-4 JSON schema."""
    if isinstance(node, list):
        return [to_jsonschema(n, strict, stats) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "x-kubernetes-validations":
            stats["cel"] += len(value or [])
            continue
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: to_jsonschema(v, strict, stats) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = to_jsonschema(value, strict, stats)
        else:
            out[key] = value
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if (strict and "properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def load_crds(paths, strict):
    schemas, stats = {}, {"cel": 0}
    for path in paths:
        found = False
        for doc in load_docs(path):
            if doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for ver in spec.get("versions", []):
                schema = (ver.get("schema") or {}).get("openAPIV3Schema")
                if not schema or not ver.get("served", True):
                    continue
                js = to_jsonschema(copy.deepcopy(schema), strict, stats)
                js.setdefault("required", [])
                for field in ("apiVersion", "kind", "metadata"):
                    if field not in js["required"]:
                        js["required"].append(field)
                key = ("%s/%s" % (spec["group"], ver["name"]), spec["names"]["kind"])
                schemas[key] = js
                found = True
        if not found:
            raise ValueError("no CRD with an openAPIV3Schema in %s" % path)
    return schemas, stats


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--crd", action="append", required=True, metavar="CRD.yaml",
                    help="CustomResourceDefinition YAML (repeatable)")
    ap.add_argument("--strict", action="store_true",
                    help="reject fields not declared in the schema")
    ap.add_argument("--quiet", action="store_true", help="print failures only")
    ap.add_argument("files", nargs="+", metavar="FILE", help="manifests; '-' = stdin")
    args = ap.parse_args()

    try:
        schemas, stats = load_crds(args.crd, args.strict)
    except (OSError, yaml.YAMLError, KeyError, ValueError) as exc:
        print("validate-crd: cannot load CRD: %s" % exc, file=sys.stderr)
        return 2

    total = checked = failed = 0
    for path in args.files:
        try:
            docs = list(load_docs(path))
        except (OSError, yaml.YAMLError) as exc:
            print("ERROR %s: %s" % (path, exc))
            failed += 1
            continue
        for doc in docs:
            total += 1
            if not isinstance(doc, dict):
                print("ERROR %s: document is not a mapping" % path)
                failed += 1
                continue
            key = (doc.get("apiVersion"), doc.get("kind"))
            schema = schemas.get(key)
            if schema is None:
                continue
            checked += 1
            name = "%s/%s" % (key[1], (doc.get("metadata") or {}).get("name", "?"))
            validator = jsonschema.Draft4Validator(schema)
            errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
            if errors:
                failed += 1
                for err in errors:
                    where = ".".join(str(p) for p in err.absolute_path) or "(root)"
                    print("ERROR %s %s: %s: %s" % (path, name, where, err.message))
            elif not args.quiet:
                print("OK    %s %s" % (path, name))

    summary = "validate-crd: %d document(s), %d custom resource(s) checked, %d failed, %d skipped" % (
        total, checked, failed, total - checked)
    if stats["cel"]:
        summary += "; %d CEL rule(s) not evaluated" % stats["cel"]
    print(summary, file=sys.stderr)
    if total == 0:
        print("validate-crd: no documents in input", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
