"""The fixed work of every answer in one thin WSGI middleware around the Flask app.

Every request gets a request id, every answer the request id, the security headers and (with
``CORS_ALLOWED_ORIGINS``) the CORS headers, every request target is held to ``MAX_URL_BYTES``, and
every answer is counted in the metrics. Done as Flask hooks
this was the larger part of a ``/healthz`` answer (about 70 us of werkzeug context-local look-ups,
validated header writes and Prometheus file writes against about 45 us for Flask's own work); here it
is a few dictionary reads of the WSGI environ and a few tuples appended to the header list in
``start_response``. The values appended are constants or a request id of a restricted character set
(``common.context.well_formed``, or one made here), so werkzeug's header validation has nothing to
catch.

Each concern configures its part in its own ``init_app`` (``gateway/requestid.py``: installs this;
``gateway/headers.py``: the headers, CORS and the target limit; ``gateway/metrics.py``: ``observe``).

What the rest of the gateway reads: the request id is bound for the request's thread
(``common.context``, read by the RPC pool and the log formatter) while the app runs, and kept in the
environ (:data:`REQUEST_ID_KEY`: ``gateway/accesslog.py`` writes it on the access line). The metrics'
route label is the matched rule's template, which Flask sets on its request object; the app's
:class:`Request` also leaves the rule in the environ (:data:`RULE_KEY`) for the middleware to read
after Flask has let go of the request (Flask clears ``werkzeug.request`` at the end).
"""
import time

from flask import Request as FlaskRequest

from common import context

REQUEST_ID_KEY = "orgplatform.request_id"
RULE_KEY = "orgplatform.url_rule"
_REQUEST_ID_HEADER = context.REQUEST_ID_HEADER
_REQUEST_ID_LOWER = _REQUEST_ID_HEADER.lower()


class Request(FlaskRequest):
    """Flask's request, remembering the matched rule in the environ too (not the request itself: that
    would tie the environ and the request in a cycle only the garbage collector breaks)."""

    _url_rule = None

    @property
    def url_rule(self):
        return self._url_rule

    @url_rule.setter
    def url_rule(self, rule):
        self._url_rule = self.environ[RULE_KEY] = rule


def install(app):
    """The app's middleware, installed around ``app.wsgi_app`` on first call."""
    edge = app.extensions.get("edge")
    if edge is None:
        edge = app.extensions["edge"] = Edge(app.wsgi_app)
        app.wsgi_app = edge
        app.request_class = Request
    return edge


def _target(environ):
    """The request target as the client sent it (gunicorn's ``RAW_URI``); rebuilt from the path and
    query where a server gives no raw target (werkzeug's test client)."""
    raw = environ.get("RAW_URI")
    if raw is not None:
        return raw
    query = environ.get("QUERY_STRING")
    return environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "") + ("?" + query if query else "")


class Edge:
    """The middleware: ``Edge(app.wsgi_app)`` is a WSGI app; ``headers``, ``max_target``/``too_long``
    and ``observe`` are set by the concerns' ``init_app`` (none set: only the request id)."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app
        self.headers = ()  # (name, value) every answer gets unless it set that header itself
        self._lower = frozenset()
        self._watched = frozenset((_REQUEST_ID_LOWER,))  # an answer setting one of these is merged
        self.max_target = None  # MAX_URL_BYTES: a longer request target is answered by too_long
        self.too_long = None  # a WSGI app (gateway/headers.py: 414 in the error shape)
        self.observe = None  # observe(route, method, status, seconds) after each answer
        self.cors = None  # cors(environ, headers): CORS_ALLOWED_ORIGINS' headers (gateway/headers.py)

    def add_headers(self, headers):
        """``headers`` ({name: value}) on every answer that lacks them (the console's pages set their
        own CSP, caching and referrer policy)."""
        self.headers = tuple(self.headers) + tuple(headers.items())
        self._lower = frozenset(name.lower() for name, _ in self.headers)
        self._watched = self._lower | {_REQUEST_ID_LOWER}

    def _merged(self, headers, request_id):
        """The answer's headers with ours, where it set some of them itself (console pages)."""
        present = {name.lower() for name, _ in headers}
        merged = [header for header in headers if header[0].lower() != _REQUEST_ID_LOWER]  # ours replaces it
        merged.append((_REQUEST_ID_HEADER, request_id))
        merged.extend(header for header in self.headers if header[0].lower() not in present)
        return merged

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        offered = environ.get("HTTP_X_REQUEST_ID")
        request_id = offered if offered is not None and context.well_formed(offered) else context.new_request_id()
        environ[REQUEST_ID_KEY] = request_id
        answered = [0]
        watched = self._watched

        def start(status, headers, exc_info=None):
            answered[0] = status
            for name, _ in headers:
                if name.lower() in watched:
                    headers = self._merged(headers, request_id)
                    break
            else:  # the usual answer sets none of ours: append them all
                headers.append((_REQUEST_ID_HEADER, request_id))
                headers.extend(self.headers)
            if self.cors is not None:
                self.cors(environ, headers)
            return start_response(status, headers, exc_info)

        tokens = context.bind(request_id)
        try:
            if self.max_target is not None and len(_target(environ)) > self.max_target:
                body = self.too_long(environ, start)
            else:
                body = self.wsgi_app(environ, start)
        finally:
            context.unbind(tokens)
        observe = self.observe
        if observe is not None and answered[0]:
            rule = environ.get(RULE_KEY)
            observe(rule.rule if rule is not None else "unmatched", environ.get("REQUEST_METHOD", "GET").upper(),
                    int(answered[0][:3]), time.perf_counter() - started)
        return body
