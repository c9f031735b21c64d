"""gunicorn settings; the app is created in each worker after fork, so no RPC connection crosses a fork."""
import os

bind = os.environ.get("GATEWAY_BIND", "127.0.0.1:8080")
workers = int(os.environ.get("GATEWAY_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GATEWAY_THREADS", "8"))
timeout = int(os.environ.get("GATEWAY_WORKER_TIMEOUT", "30"))
graceful_timeout = 10
keepalive = 5
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
logger_class = "gateway.accesslog.RedactingLogger"  # invite tokens in paths never reach the log
preload_app = False
# gunicorn's own request-line limit (at most 8190 bytes) would answer 414 in HTML; 0 lifts it to its
# 1 MiB buffer cap and the app answers targets longer than MAX_URL_BYTES with 414 in the error shape.
limit_request_line = 0
