"""JSON schemas for kubeconform, made from the Kubernetes and KEDA sources (no download at test time).

kubeconform fetches its schemas from the web by default, which this project's machines cannot
reach. The same schemas are derived here from what the Go module proxy serves: the OpenAPI document
of the ``k8s.io/kubernetes`` module (``api/openapi-spec/swagger.json``) and KEDA's CRDs
(``config/crd/bases`` of ``github.com/kedacore/keda/v2``). Each kind gets a standalone, strict
schema (every ``$ref`` inlined; no property the API does not know) named as kubeconform's
``{{ .ResourceKind }}{{ .KindSuffix }}.json`` template expects (``deployment-apps-v1.json``).

    python -m stack.k8s_schemas OUT_DIR KUBERNETES_MODULE_DIR KEDA_MODULE_DIR
"""
import json
import os
import sys

import yaml

INT_OR_STRING = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
QUANTITY = {"oneOf": [{"type": "string"}, {"type": "number"}]}


def file_name(kind, api_version):
    """kubeconform's ``schemaPath``: ``<kind>-<first label of the group>-<version>``, core: ``<kind>-<version>``."""
    group_parts = api_version.split("/")
    suffix = "-" + group_parts[0].split(".")[0].lower()
    if len(group_parts) > 1:
        suffix += "-" + group_parts[1].lower()
    return f"{kind.lower()}{suffix}.json"


def strict(schema):
    """Objects that list their properties allow no others (kubeconform -strict's meaning)."""
    if isinstance(schema, dict):
        for value in schema.values():
            strict(value)
        if "properties" in schema and "additionalProperties" not in schema and not schema.get(
                "x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        for item in schema:
            strict(item)
    return schema


def openapi_v3(schema):
    """Kubernetes' extensions in terms a JSON schema validator understands."""
    if isinstance(schema, list):
        return [openapi_v3(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("x-kubernetes-int-or-string") or schema.get("format") == "int-or-string":
        return dict(INT_OR_STRING)
    out = {key: openapi_v3(value) for key, value in schema.items()}
    if out.get("nullable"):
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
    return out


def inline(schema, definitions, seen=()):
    """``schema`` with every ``#/definitions/...`` reference replaced by its definition."""
    if isinstance(schema, list):
        return [inline(item, definitions, seen) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str):  # (JSONSchemaProps has a *property* named "$ref")
        name = ref.rsplit("/", 1)[1]
        if name == "io.k8s.apimachinery.pkg.api.resource.Quantity":
            return dict(QUANTITY)
        if name in seen:  # recursive types (JSONSchemaProps): accept anything below
            return {}
        return inline(definitions[name], definitions, seen + (name,))
    return {key: inline(value, definitions, seen) for key, value in schema.items()}


def kubernetes(swagger_path):
    with open(swagger_path) as handle:
        definitions = json.load(handle)["definitions"]
    for name, definition in definitions.items():
        for gvk in definition.get("x-kubernetes-group-version-kind", ()):
            api_version = f'{gvk["group"]}/{gvk["version"]}' if gvk["group"] else gvk["version"]
            schema = openapi_v3(inline(definition, definitions, (name,)))
            properties = schema.setdefault("properties", {})
            properties["kind"] = {"type": "string", "enum": [gvk["kind"]]}
            properties["apiVersion"] = {"type": "string", "enum": [api_version]}
            yield file_name(gvk["kind"], api_version), strict(schema)


def crds(folder):
    for entry in sorted(os.listdir(folder)):
        if not entry.endswith((".yaml", ".yml")):
            continue
        with open(os.path.join(folder, entry)) as handle:
            for crd in yaml.safe_load_all(handle):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                spec = crd["spec"]
                for version in spec["versions"]:
                    api_version = f'{spec["group"]}/{version["name"]}'
                    schema = openapi_v3(version["schema"]["openAPIV3Schema"])
                    properties = schema.setdefault("properties", {})
                    properties["kind"] = {"type": "string", "enum": [spec["names"]["kind"]]}
                    properties["apiVersion"] = {"type": "string", "enum": [api_version]}
                    properties["metadata"] = {"type": "object"}
                    yield file_name(spec["names"]["kind"], api_version), strict(schema)


def main(argv):
    out, kubernetes_dir, keda_dir = argv[1:4]
    os.makedirs(out, exist_ok=True)
    written = 0
    sources = (kubernetes(os.path.join(kubernetes_dir, "api", "openapi-spec", "swagger.json")),
               crds(os.path.join(keda_dir, "config", "crd", "bases")))
    for source in sources:
        for name, schema in source:
            with open(os.path.join(out, name), "w") as handle:
                json.dump(schema, handle)
            written += 1
    print(f"{written} schemas in {out}")


if __name__ == "__main__":
    main(sys.argv)
