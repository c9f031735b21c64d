"""One request id per HTTP request (``X-Request-ID``), returned on every answer.

A client's well-formed ``X-Request-ID`` (``common.context.well_formed``) is kept, anything else is
replaced by a fresh uuid4, so a client cannot put arbitrary text into our logs and events. The id
is bound for the request's thread (``common.context``): the RPC pool sends it to the services as
context data, the log formatter writes it on every line, and the answer carries it, errors
included (a before-request hook that answers early, a 404, a 500 all pass ``after_request``).
"""
from flask import g, request

from common import context


def init_app(app):
    """Register the hooks; call before any other ``before_request`` hook is registered (a hook
    that answers early skips the ones after it)."""

    @app.before_request
    def bind_request_id():
        offered = request.headers.get(context.REQUEST_ID_HEADER)
        g.request_id = offered if context.well_formed(offered) else context.new_request_id()
        g.request_id_tokens = context.bind(g.request_id)

    @app.after_request
    def return_request_id(response):
        request_id = g.get("request_id") or context.new_request_id()
        response.headers[context.REQUEST_ID_HEADER] = request_id
        return response

    @app.teardown_request
    def unbind_request_id(error=None):
        tokens = g.pop("request_id_tokens", None)
        if tokens is not None:
            context.unbind(tokens)
