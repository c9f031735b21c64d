"""The console calls the API's own operations in-process: one place decides who may do what.

Each page action names an operation of the HTTP API (its view function's name) and runs exactly
what an HTTP call of it runs: the operation's declared access rule (``gateway.api.authorize``,
with the session's access token instead of an ``Authorization`` header), its bulkhead, its request
schema, the view (one RPC through the same pool) and its response schema. So a forged console
request for an admin action meets the same 403 as the API, and the console cannot grow rules of
its own that drift from the API's.
"""
import functools

from flask import Response, current_app, g

from gateway.api import authorize, load, schema_instance
from gateway.routes import api


@functools.lru_cache(maxsize=None)
def operations():
    return {op.view.__name__: op for op in api.operations}


def call(name, access=None, body=None, query=None, **path_args):
    """Run the API operation ``name`` as the holder of the access token ``access``; returns the response document
    (or the view's own ``Response`` for streamed answers). Raises ``DomainError`` like the API."""
    op = operations()[name]
    g.claims = authorize(op, path_args, access)
    with current_app.extensions["bulkheads"].enter(op.bulkhead):
        if op.body is not None:
            path_args["body"] = load(op.body, body or {})
        if op.query is not None:
            path_args["query"] = load(op.query, {k: v for k, v in (query or {}).items() if v not in (None, "")})
        result = op.view(**path_args)
    if isinstance(result, Response):
        return result
    if isinstance(result, tuple):
        result = result[0]
    return schema_instance(op.response).dump(result) if op.response is not None else result


def require(name, access, **path_args):
    """Apply the access rule of operation ``name`` without running it: a page that exists only to
    lead to that operation (the Delete tab, the operator console) is refused exactly as it would be."""
    authorize(operations()[name], path_args, access)
