"""One request id per HTTP request (``X-Request-ID``), returned on every answer.

A client's well-formed ``X-Request-ID`` (``common.context.well_formed``) is kept, anything else is
replaced by a fresh uuid4, so a client cannot put arbitrary text into our logs and events. The id
is bound for the request's thread (``common.context``): the RPC pool sends it to the services as
context data, the log formatter writes it on every line, the access line takes it from the environ,
and the answer carries it, errors included. All of that is done by the WSGI middleware around the
app (``gateway/wsgi.py``), outside Flask: an answer Flask makes early (a 404, a 405, a hook that
refuses) and one the middleware makes itself (414) get it alike, and no Flask hook costs a request
werkzeug's context-local look-ups.
"""
from gateway import wsgi


def init_app(app):
    """Install the middleware that gives every request its id (``gateway/wsgi.py``)."""
    wsgi.install(app)
