"""gunicorn settings; the app is created in each worker after fork, so no RPC connection crosses a fork."""
import os

from gateway.accesslog import DEFAULT_FORMAT
from gateway.settings import GatewaySettings

bind = os.environ.get("GATEWAY_BIND", "127.0.0.1:8080")
workers = int(os.environ.get("GATEWAY_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GATEWAY_THREADS", "8"))
timeout = int(os.environ.get("GATEWAY_WORKER_TIMEOUT", "30"))
graceful_timeout = 10
keepalive = 5
accesslog = "-"
access_log_format = DEFAULT_FORMAT  # '%(h)s "%(r)s" %(s)s %(b)s %(M)sms', written without % (gateway/accesslog.py)
logger_class = "gateway.accesslog.RedactingLogger"  # invite tokens in paths never reach the log
preload_app = False
# gunicorn's own request-line limit (at most 8190 bytes) would answer 414 in HTML; 0 lifts it to its
# 1 MiB buffer cap and the app answers targets longer than MAX_URL_BYTES with 414 in the error shape.
limit_request_line = 0
# nginx in front bounds request lines and each header line to MAX_URL_BYTES + 1 KiB (at most 4 such
# lines beyond 4 KiB) and answers in the error shape; gunicorn's own smaller limits (8190 bytes a
# field, 100 fields) would answer what nginx let through with HTML 431/400, so they sit above nginx's.
_gateway = GatewaySettings.from_file()
limit_request_field_size = _gateway.max_url_bytes + 2048
limit_request_fields = 32768
# who may set X-Forwarded-Proto (and, read by the app, X-Real-IP): the proxy only (gateway/edge.py)
forwarded_allow_ips = _gateway.forwarded_allow_ips


def on_starting(server):
    """Before the workers fork: the overview change stamps they share (gateway/readmodel.py)."""
    from gateway import readmodel

    readmodel.shared_stamps()


def post_worker_init(worker):
    """After the fork, with the app loaded: start the worker's bus listener (gateway/listener.py),
    then move everything loaded so far out of the garbage collector's sight (``gc.freeze``): the
    app, its schemas and routes live as long as the worker, and a full collection walking them all
    was a pause of tens of milliseconds in the middle of someone's request (the overview's p99)."""
    import gc

    from gateway import listener

    listener.start(worker.wsgi)
    gc.collect()
    gc.freeze()


def worker_exit(server, worker):
    """The worker's access lines still in its buffer (gateway/accesslog.py) and the answers it has
    not yet written to the metrics files (gateway/metrics.py) go out before it does."""
    from gateway import metrics

    flush = getattr(server.log, "flush_access", None)
    if flush is not None:
        flush()
    metrics.flush_all()


def child_exit(server, worker):
    """A worker that exited no longer counts in the multiprocess metrics' live gauges (gateway/metrics.py)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
