"""Per-request cost of the gateway's ``/healthz`` next to ``bench/bare_app.py``, timed in this process
through the WSGI callables alone (no sockets, no gunicorn, no broker): the micro view of
``healthz_vs_bare_flask``. The gateway side also writes its access line the way gunicorn's worker
does after each answer (``gateway.accesslog.RedactingLogger.access``, to ``/dev/null``), since the
bare app under the bench has no access log. Metrics are in multiprocess mode (a temporary
``PROMETHEUS_MULTIPROC_DIR``), as in production.

``python -m bench.wsgi_micro [requests] [--profile]``: microseconds per request, the best of 7
interleaved rounds (bare, gateway, bare, ...) of ``requests`` each, in CPU time of this process
(``time.process_time``: every thread, the gateway's flushers included, and none of the time other
work on a shared machine holds the cores); the best round is the one least disturbed.
"""
import atexit
import datetime
import os
import shutil
import sys
import tempfile
import time


def _environ(path="/healthz"):
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(path=path, headers={"Host": "127.0.0.1:8081", "User-Agent": "wrk"}).get_environ()
    environ.update(RAW_URI=path, REMOTE_ADDR="127.0.0.1", SERVER_PROTOCOL="HTTP/1.1")
    return environ


class _Response:
    """What gunicorn's access logger reads of its response object."""

    def __init__(self):
        self.status_code, self.headers, self.sent = None, [], 0

    def start_response(self, status, headers, exc_info=None):
        self.status_code, self.headers = int(status.split(" ", 1)[0]), headers


def _access_logger():
    from gunicorn.config import Config

    from gateway.accesslog import RedactingLogger

    cfg = Config()
    cfg.set("accesslog", os.devnull)
    cfg.set("access_log_format", '%(h)s "%(r)s" %(s)s %(b)s %(M)sms')
    return RedactingLogger(cfg)


def caller(app, log=None):
    """One ``GET /healthz`` through ``app`` as gunicorn's worker makes it (and its access line)."""
    template = _environ()
    took = datetime.timedelta(microseconds=100)

    def once():
        environ = dict(template)
        response = _Response()
        body = app(environ, response.start_response)
        try:
            for chunk in body:
                response.sent += len(chunk)
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        if log is not None:
            log.access(response, None, environ, took)
        assert response.status_code == 200
    return once


def per_request_us(calls, requests, rounds=7):
    """``{name: best microseconds per call}`` of each of ``calls``, measured in interleaved rounds."""
    for once in calls.values():
        for _ in range(500):
            once()
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):
        for name, once in calls.items():
            started = time.process_time()
            for _ in range(requests):
                once()
            best[name] = min(best[name], (time.process_time() - started) / requests * 1e6)
    return best


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    profile = "--profile" in argv
    argv = [a for a in argv if a != "--profile"]
    requests = int(argv[0]) if argv else 5000
    scratch = tempfile.mkdtemp(prefix="wsgi-micro-")  # its own: never a running gateway's folder
    atexit.register(shutil.rmtree, scratch, True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = scratch
    # no broker is needed: nothing connects until an RPC is made (the port is closed)
    from bench.bare_app import create_app as bare_app
    from gateway.app import create_app

    gateway = create_app({"AMQP_URI": "amqp://guest:guest@127.0.0.1:9/", "CONSOLE_SESSION_KEY": "micro"})
    log = _access_logger()
    once = caller(gateway, log)
    timings = per_request_us({"bare": caller(bare_app()), "gateway": once}, requests)
    log.flush_access()
    bare_us, gateway_us = timings["bare"], timings["gateway"]
    print(f"bare Flask /healthz: {bare_us:.1f} us/request")
    print(f"gateway /healthz (+ access line): {gateway_us:.1f} us/request ({gateway_us - bare_us:+.1f} us, "
          f"ratio bare/gateway {bare_us / gateway_us:.2f})")
    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(requests):
            once()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
