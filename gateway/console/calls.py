"""The console calls the API's own operations in-process: one place decides who may do what.

Each page action names an operation of the HTTP API (its view function's name) and runs exactly
what an HTTP call of it runs: the operation's declared access rule (``gateway.api.authorize``,
with the session's access token instead of an ``Authorization`` header), its bulkhead, its request
schema, the view (one RPC through the same pool) and its response schema. So a forged console
request for an admin action meets the same 403 as the API, and the console cannot grow rules of
its own that drift from the API's.
"""
import functools
from concurrent.futures import ThreadPoolExecutor

from flask import Response, copy_current_request_context, current_app, g

from gateway.api import authorize, load, schema_instance
from gateway.routes import api


@functools.cache
def operations():
    return {op.view.__name__: op for op in api.operations}


def call(name, access=None, body=None, query=None, **path_args):
    """Run the API operation ``name`` as the holder of the access token ``access``; returns the response document
    (or the view's own ``Response`` for streamed answers). Raises ``DomainError`` like the API."""
    op = operations()[name]
    g.claims = authorize(op, path_args, access)
    g.idempotency_key = None  # a form post is no client retry: the API's Idempotency-Key has no console twin
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


#: threads that run a page's independent calls side by side (each call holds one pooled RPC proxy)
_parallel = ThreadPoolExecutor(max_workers=8, thread_name_prefix="console-call")


def gather(**calls):
    """Run several operations at once: ``name=(operation, access, kwargs)`` -> ``{name: result}``.

    A page needs a few independent answers (the caller's organizations for the avatar menu, the
    overview, the ledger); one after the other their RPC round trips add up, side by side the page
    costs about one. Each runs in its own copy of the request context (its own ``g``). The first
    error raised is re-raised, as if the calls had run in order."""
    names = list(calls)
    futures = {name: _parallel.submit(copy_current_request_context(
        functools.partial(_call_args, *calls[name]))) for name in names[1:]}
    results, first_error = {}, None
    try:
        results[names[0]] = _call_args(*calls[names[0]])
    except Exception as error:  # wait for the others all the same: they hold pooled proxies
        first_error = error
    for name in names[1:]:
        try:
            results[name] = futures[name].result()
        except Exception as error:
            first_error = first_error or error
    if first_error is not None:
        raise first_error
    return results


def _call_args(name, access, kwargs):
    return call(name, access, **kwargs)
