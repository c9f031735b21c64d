"""Declarative routes: one decorator states path, access rule, request and response schema.

The same declaration drives request handling (token check, organization rule, role check, body
validation, response shaping) and the OpenAPI document, so the two cannot drift apart.
"""
import functools
import re
from dataclasses import dataclass, field

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Response, current_app, g, jsonify, request
from marshmallow import ValidationError

from common.errors import STATUS_BY_CODE, DomainError
from common.validation import require_text_everywhere
from gateway.edge import CLASSES as BULKHEAD_CLASSES
from gateway.schemas import ErrorSchema

ROLE_RANK = {"member": 1, "dataset_manager": 2, "admin": 3}
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
              query=None, org_rule=True, headers=(), bulkhead=None):
        """``headers``: optional request headers the view reads (documented as header parameters);
        ``bulkhead``: the class of worker threads the operation shares (``gateway/edge.py``)."""
        if bulkhead is not None and bulkhead not in BULKHEAD_CLASSES:
            raise ValueError("unknown bulkhead class %r" % bulkhead)

        def decorate(view):
            operation = Operation(rule, method, access, summary, tag, body, query, response, status, errors, view,
                                  org_rule, bulkhead, {"headers": tuple(headers)})
            self.operations.append(operation)
            endpoint = "%s_%s" % (method.lower(), view.__name__)
            response_schema = schema_instance(response) if response is not None else None

            @functools.wraps(view)
            def handle(**path_args):
                g.claims = authorize(operation, path_args)
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
                payload = response_schema.dump(result) if response_schema is not None else result
                return jsonify(payload), status, headers

            self.blueprint.add_url_rule(rule, endpoint, handle, methods=[method])
            return view
        return decorate


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
    if not request.data:
        data = {}
    else:
        try:
            data = request.get_json(silent=True)
        except RecursionError:
            raise DomainError("malformed_request", "request body is nested too deeply")
        if data is None:
            raise DomainError("invalid_json", "request body is not valid JSON")
    if not isinstance(data, dict):
        raise DomainError("malformed_request", "request body must be a JSON object")
    return load(schema, data)


@functools.lru_cache(maxsize=None)
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
        raise DomainError("validation_failed", "invalid input", error.messages)


def build_openapi(api):
    spec = APISpec(title="Organizations platform", version="1.0.0", openapi_version="3.0.3",
                   plugins=[MarshmallowPlugin()],
                   info={"description": "Organizations, members, invitations, usage and credits. "
                                        "Credits are integer milli-credits."})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    spec.components.schema("Error", schema=ErrorSchema)
    paths = {}
    for op in api.operations:
        responses = {str(op.status): {"description": "success"}}
        if op.response is not None:
            responses[str(op.status)]["content"] = {"application/json": {"schema": op.response}}
        codes = set(op.errors) | {"400", "422"} if op.body else set(op.errors)
        if op.access != PUBLIC:
            codes |= {"401"}
        if op.access not in (PUBLIC, USER):
            codes |= {"403"}
        if op.org_scoped:
            codes |= {"404", "410"}  # 410: from the deletion's 202 on, and after it completed
        if op.query is not None:
            codes |= {"422"}
        codes |= {"414", "503"}  # 414: a request target longer than MAX_URL_BYTES
        if op.bulkhead is not None:  # the class is full: refused at once, with Retry-After
            codes |= {str(STATUS_BY_CODE[BULKHEAD_CLASSES[op.bulkhead][1]])}
        for code in sorted(codes):
            responses[code] = {"description": "error", "content": {"application/json": {"schema": "Error"}}}
        operation = {"summary": op.summary, "tags": [op.tag], "responses": responses,
                     "operationId": op.view.__name__, "x-access": op.access}
        operation["security"] = [{"bearer": []}] if op.access != PUBLIC else []
        if op.body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": op.body}}}
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                  for p in re.findall(r"{([a-z_]+)}", op.openapi_path)]
        if op.query is not None:
            params.append({"in": "query", "schema": op.query})
        for header in op.extra.get("headers", ()):
            params.append({"name": header, "in": "header", "required": False,
                           "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"^[!-~]+$"}})
        if params:
            operation["parameters"] = params

        paths.setdefault(op.openapi_path, {})[op.method.lower()] = operation
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()
