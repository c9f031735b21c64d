"""What metrics and JSON logs cost (issue 15): overview throughput with them on vs off, same run.

"On" is the default (every process counts its metrics, the gateway in gunicorn's multiprocess
mode, services serving ``/metrics``; every log line a JSON object); "off" restarts the gateway and
the org service (the overview's whole path) with ``METRICS_ENABLED=0`` and ``LOG_FORMAT=text``.
Both modes still write the same lines (the access line, one line per RPC call): the figure is the
price of the metrics and of the JSON formatting, not of logging itself. Rounds alternate on, off,
on, off (each after a warm-up), and each mode's figure is the median of its wrk runs.

``python -m bench --only observability`` runs it alone.
"""
import os
import statistics

from bench.harness import Figure, warm, wrk
from stack import stack

OFF = {"METRICS_ENABLED": "0", "LOG_FORMAT": "text"}
RESTARTED = ("gateway", "org")


def _restart(inst, settings):
    """Restart the gateway and the org service with ``settings`` in their environment (None: as
    the instance started them)."""
    for name in RESTARTED:
        stack.stop_pid_file(stack._pid_file(inst, name))
    saved = {key: os.environ.get(key) for key in OFF}
    try:
        for key in OFF:
            os.environ.pop(key, None)
        os.environ.update(settings or {})
        stack.start_service(inst, "org")
        stack.start_gateway(inst)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    stack.wait_for(lambda: stack.gateway_healthy(inst), "the gateway after a restart", timeout=60)


def measure(inst, client, org_id, token, rounds=2):
    url = inst.gateway_url + f"/api/v1/organizations/{org_id}"
    rates = {"on": [], "off": []}
    try:
        for _ in range(rounds):
            for mode in ("on", "off"):
                _restart(inst, OFF if mode == "off" else None)
                client.wait(lambda: client.call("GET", f"/organizations/{org_id}", token), "the overview")
                warm(url, token, seconds=2)
                rates[mode] += [wrk(url, token) for _ in range(2)]
    finally:
        _restart(inst, None)  # leave the instance as it was for the parts after this one
    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    with_them, without = (", ".join(f"{r:.0f}" for r in rates[key]) for key in ("on", "off"))
    print(f"  overview req/s with metrics and JSON logs: {with_them}; without: {without}", flush=True)
    return Figure("observability_on_vs_off", on / off, ">= 0.95",
                  f"({on:.0f} vs {off:.0f} req/s: metrics + JSON logs on vs off)")
