"""Declarative routes: one decorator states path, access rule, request and response schema.

The same declaration drives request handling (token check, organization rule, role check, body
validation, response shaping) and the OpenAPI document, so the two cannot drift apart.
"""
import copy
import functools
import inspect
import re
from dataclasses import dataclass, field

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Response, current_app, g, jsonify, request
from marshmallow import ValidationError

from common.errors import STATUS_BY_CODE, DomainError
from common.events import ROLE_RANK
from common.validation import require_text_everywhere
from gateway.edge import CLASSES as BULKHEAD_CLASSES
from gateway.schemas import ErrorSchema

#: access rules: who may call an operation
PUBLIC, USER, MEMBER, DATASET_MANAGER, ADMIN, OWNER, SUPERUSER = (
    "public", "user", "member", "dataset_manager", "admin", "owner", "superuser")


@dataclass
class Operation:
    rule: str
    method: str
    access: str
    summary: str
    tag: str
    body: type = None
    query: type = None
    response: type = None
    status: int = 200
    errors: tuple = ()
    view: object = None
    org_rule: bool = True
    #: route class sharing a bounded number of the worker's threads (``gateway/edge.py``), or None
    bulkhead: str = None
    extra: dict = field(default_factory=dict)
    #: accepts an ``Idempotency-Key`` header; a replay answers the first answer + ``Idempotent-Replayed``
    idempotent: bool = False
    #: response headers of the success answer, documented (``RESPONSE_HEADERS``)
    success_headers: tuple = ()

    @property
    def openapi_path(self):
        return "/api/v1" + re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", self.rule)

    @property
    def org_scoped(self):
        """The token's organization must be the path's (``org_rule=False``: the view decides)."""
        return "<org_id>" in self.rule and self.org_rule


class Api:
    def __init__(self):
        self.blueprint = Blueprint("api", __name__)
        self.operations = []

    def route(self, rule, method, access, summary, tag, body=None, response=None, status=200, errors=(),
              query=None, org_rule=True, headers=(), bulkhead=None, idempotent=False, success_headers=()):
        """``headers``: optional request headers the view reads (documented as header parameters);
        ``bulkhead``: the class of worker threads the operation shares (``gateway/edge.py``);
        ``idempotent``: the operation takes an ``Idempotency-Key`` header (``g.idempotency_key``,
        validated here) and its service answers ``replayed: true`` when it repeats a first answer;
        ``success_headers``: headers the success answer carries (documented)."""
        if bulkhead is not None and bulkhead not in BULKHEAD_CLASSES:
            raise ValueError(f"unknown bulkhead class {bulkhead!r}")

        def decorate(view):
            operation = Operation(rule, method, access, summary, tag, body, query, response, status, errors, view,
                                  org_rule, bulkhead, {"headers": tuple(headers)}, idempotent,
                                  tuple(success_headers))
            self.operations.append(operation)
            endpoint = f"{method.lower()}_{view.__name__}"
            response_schema = schema_instance(response) if response is not None else None

            @functools.wraps(view)
            def handle(**path_args):
                g.claims = authorize(operation, path_args)
                g.idempotency_key = idempotency_key() if idempotent else None
                # a full class is refused before any more work (parsing, validation): shedding is cheap
                with current_app.extensions["bulkheads"].enter(bulkhead):
                    if body is not None:
                        path_args["body"] = parse_body(body)
                    if query is not None:
                        path_args["query"] = load(query, request.args.to_dict())
                    result = view(**path_args)
                if isinstance(result, Response):  # streamed: the view shaped it already
                    return result
                headers = {}
                if isinstance(result, tuple):
                    result, headers = result
                if idempotent and isinstance(result, dict) and result.get("replayed"):
                    headers = dict(headers, **{"Idempotent-Replayed": "true"})
                payload = response_schema.dump(result) if response_schema is not None else result
                return jsonify(payload), status, headers

            self.blueprint.add_url_rule(rule, endpoint, handle, methods=[method])
            return view
        return decorate


IDEMPOTENCY_KEY = re.compile(r"^[!-~]{1,200}$")


def idempotency_key():
    """The optional ``Idempotency-Key`` header: 1-200 visible ASCII characters, else 422."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not IDEMPOTENCY_KEY.match(key):
        raise DomainError("validation_failed", "invalid input",
                          {"Idempotency-Key": ["Must be 1-200 visible ASCII characters."]})
    return key


def bearer_token():
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise DomainError("unauthorized", "a bearer access token is required")
    return token.strip()


def authorize(operation, path_args, token=None):
    """Apply the operation's access rule; returns the token claims (None for public operations).

    ``token``: the access token when it does not come from the ``Authorization`` header (the web
    console holds it in its sealed session cookie and calls operations through ``gateway/console``)."""
    if operation.access == PUBLIC:
        return None
    claims = current_app.extensions["verifier"].verify(bearer_token() if token is None else token)
    superuser = bool(claims.get("su"))
    if operation.access == SUPERUSER and not superuser:
        raise DomainError("forbidden", "only platform operators may do this")
    if operation.org_scoped:
        if claims.get("org") != path_args["org_id"] and not superuser:
            raise DomainError("wrong_organization", "your token is scoped to another organization")
        if path_args["org_id"] in current_app.extensions["gone_organizations"]:  # see gateway/deletions.py
            raise DomainError("organization_gone", "organization is deleted or being deleted")
        if operation.access == OWNER and not claims.get("owner"):
            raise DomainError("forbidden", "only the organization's owner may do this")
        required = ROLE_RANK.get(operation.access)
        if required and not superuser and ROLE_RANK.get(claims.get("role"), 0) < required:
            raise DomainError("forbidden", "your role in this organization does not allow this")
    return claims


def parse_body(schema):
    """The one place JSON bodies are parsed. Python's parser recurses once per nesting level: a body
    of 50,000 ``[`` raises ``RecursionError`` (not the ``ValueError`` that ``silent`` swallows)."""
    if not request.get_data(cache=True, parse_form_data=False):  # raw: a form's body is not in .data
        data = {}
    else:
        if not is_json(request.mimetype):
            raise DomainError("unsupported_media_type", "the request body must be application/json",
                              {"content_type": request.mimetype or None, "expected": "application/json"})
        try:
            data = request.get_json(silent=True)
        except RecursionError:
            raise DomainError("malformed_request", "request body is nested too deeply") from None
        if data is None:
            raise DomainError("invalid_json", "request body is not valid JSON")
    if not isinstance(data, dict):
        raise DomainError("malformed_request", "request body must be a JSON object")
    return load(schema, data)


def is_json(mimetype):
    """``application/json`` or a ``+json`` type (``application/merge-patch+json``...), any charset."""
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


@functools.cache
def schema_instance(schema):
    """One instance per schema class: marshmallow schemas are reusable, and building one per
    request was measurable on the hot path."""
    return schema()


def load(schema, data):
    """Validate a body or query. First, one rule for every string of every operation: text must be
    Unicode scalar values (JSON can spell lone surrogates, which no database or mail can take)."""
    require_text_everywhere(data)
    try:
        return schema_instance(schema).load(data)
    except ValidationError as error:
        raise DomainError("validation_failed", "invalid input", error.messages) from error


#: the operations' groups, in the document's order
TAGS = {
    "auth": "Accounts, sessions and tokens: sign-up, login, refresh, switch, password, the caller",
    "organizations": "Organizations: create, list, overview, rename, plan, deletion, export",
    "members": "Members of an organization: roles, removal, ownership",
    "invites": "Invitations by email: create, list, revoke, preview, accept",
    "notifications": "Who gets which mail, and the delivery log",
    "usage": "Storage reports and the usage summary",
    "credits": "The credit ledger (integer milli-credits): grants, reservations, settlements",
    "audit": "The activity log: who did what, when, built from the platform's events; tamper-evident",
}
ERROR_DESCRIPTIONS = {
    "400": "malformed request (not JSON, not an object, nested too deeply)",
    "401": "no, invalid, expired or revoked token (or wrong credentials)",
    "402": "the balance does not cover it (`insufficient_credits`)",
    "403": "authenticated but not allowed (`wrong_organization` when the token is scoped elsewhere)",
    "404": "unknown (also what belongs to another organization)",
    "409": "conflict with the current state (or an `Idempotency-Key` reused with other parameters)",
    "410": "the organization is deleted or being deleted",
    "413": "request body larger than `MAX_REQUEST_BYTES`",
    "414": "request target longer than `MAX_URL_BYTES`",
    "415": "the body is not `application/json` (`unsupported_media_type`)",
    "422": "invalid input; `details` names each field",
    "429": "rate limited; retry after `Retry-After` seconds",
    "503": "a service is unavailable or did not answer within `RPC_TIMEOUT`; retry after `Retry-After` "
           "seconds. A write may still have happened: retry it with the same `Idempotency-Key`",
}
#: response headers, as components; operations name them
RESPONSE_HEADERS = {
    "Retry-After": {"description": "seconds to wait before trying again",
                    "schema": {"type": "integer", "minimum": 0}},
    "Location": {"description": "the deletion status, readable without a token (same as `receipt_url`)",
                 "schema": {"type": "string", "format": "uri-reference"}},
    "Idempotent-Replayed": {"description": "`true` when this answer repeats the first answer to the same "
                                           "`Idempotency-Key` (nothing was written again)",
                            "schema": {"type": "string", "enum": ["true"]}},
}
IDEMPOTENCY_NOTE = (
    "**Idempotent**: send an `Idempotency-Key` header (1-200 visible ASCII characters, unique per "
    "intended write). Repeating the request with the same key (after a timeout, a 503 or a lost "
    "answer) writes nothing again and answers the first answer with `Idempotent-Replayed: true`; the "
    "same key with other parameters is 409.")


def _header_refs(*names):
    return {name: {"$ref": f'#/components/headers/{name.replace("-", "")}'} for name in names}


def _nullable_refs(document):
    """apispec writes a nullable nested schema as ``anyOf: [{type: object, nullable: true}, {$ref}]``,
    which generated clients mishandle (openapi-generator's python client refuses the null,
    openapi-python-client makes it an untyped dict). OpenAPI 3.0's usual ``allOf: [{$ref}]`` with
    ``nullable: true`` satisfies both generators but not Redocly's recommended rules (``nullable``
    needs a ``type`` beside it), and with ``type: object`` added openapi-python-client drops the
    null again. What all three take: a ``$ref`` to a component ``Nullable<Name>``, the referenced
    schema with ``nullable: true`` (generated here, one per schema that is nullable somewhere)."""
    schemas = document["components"]["schemas"]
    nullable = {}

    def visit(node):
        if isinstance(node, dict):
            any_of = node.get("anyOf")
            if isinstance(any_of, list) and len(any_of) == 2:
                refs = [s for s in any_of if set(s) == {"$ref"}]
                if refs and {"type": "object", "nullable": True} in any_of:
                    name = refs[0]["$ref"].rsplit("/", 1)[1]
                    nullable[name] = "Nullable" + name
                    node.clear()
                    node["$ref"] = "#/components/schemas/Nullable" + name
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)
    visit(document)
    for name, nullable_name in nullable.items():
        schemas[nullable_name] = dict(copy.deepcopy(schemas[name]), nullable=True,
                                      description=f"{name}, or null")
    return document


def build_openapi(api):
    spec = APISpec(title="Organizations platform", version="1.0.0", openapi_version="3.0.3",
                   plugins=[MarshmallowPlugin()],
                   info={"description": "Organizations, members, invitations, usage and credits. "
                                        "Credits are integer milli-credits. Every error is "
                                        "`{\"error\": {\"code\", \"message\", \"details\"}}`. Answers may "
                                        "gain fields; requests may not carry unknown ones.",
                         "license": {"name": "Proprietary"},
                         "contact": {"name": "Organizations platform team"}},
                   servers=[{"url": "http://127.0.0.1:8080", "description": "the local stack (`make up`)"}],
                   tags=[{"name": name, "description": text} for name, text in TAGS.items()])
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    spec.components.schema("Error", schema=ErrorSchema)
    for name, header in RESPONSE_HEADERS.items():
        spec.components.header(name.replace("-", ""), header)
    paths = {}
    for op in api.operations:
        success = {"description": "success"}
        if op.response is not None:
            success["content"] = {"application/json": {"schema": op.response}}
        success_headers = list(op.success_headers) + (["Idempotent-Replayed"] if op.idempotent else [])
        if success_headers:
            success["headers"] = _header_refs(*success_headers)
        responses = {str(op.status): success}
        codes = set(op.errors) | {"400", "413", "415", "422"} if op.body else set(op.errors)
        if op.access != PUBLIC:
            codes |= {"401"}
        if op.access not in (PUBLIC, USER):
            codes |= {"403"}
        if op.org_scoped:
            codes |= {"404", "410"}  # 410: from the deletion's 202 on, and after it completed
        if op.query is not None:
            codes |= {"422"}
        if op.idempotent:
            codes |= {"409", "422"}  # the key reused with other parameters; a malformed key
        codes |= {"414", "503"}  # 414: a request target longer than MAX_URL_BYTES
        if op.bulkhead is not None:  # the class is full: refused at once, with Retry-After
            codes |= {str(STATUS_BY_CODE[BULKHEAD_CLASSES[op.bulkhead][1]])}
        for code in sorted(codes):
            responses[code] = {"description": ERROR_DESCRIPTIONS.get(code, "error"),
                               "content": {"application/json": {"schema": "Error"}}}
            if code in ("429", "503"):
                responses[code]["headers"] = _header_refs("Retry-After")
        description = inspect.getdoc(op.view) or op.summary
        if op.idempotent:
            description += "\n\n" + IDEMPOTENCY_NOTE
        operation = {"summary": op.summary, "description": description, "tags": [op.tag],
                     "responses": responses, "operationId": op.view.__name__, "x-access": op.access,
                     "x-idempotent": op.idempotent}
        operation["security"] = [{"bearer": []}] if op.access != PUBLIC else []
        if op.body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": op.body}}}
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                  for p in re.findall(r"{([a-z_]+)}", op.openapi_path)]
        if op.query is not None:
            params.append({"in": "query", "schema": op.query})
        headers = list(op.extra.get("headers", ())) + (["Idempotency-Key"] if op.idempotent else [])
        for header in headers:
            params.append({"name": header, "in": "header", "required": False,
                           "description": "see the operation's description" if header == "Idempotency-Key" else "",
                           "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"^[!-~]+$"}})
        if params:
            operation["parameters"] = params

        paths.setdefault(op.openapi_path, {})[op.method.lower()] = operation
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return _nullable_refs(spec.to_dict())
