"""Figures 1, 2 and 5: what an overview request costs next to one bare RPC hop, what the token
check costs, and what a second org-service instance adds.

* ``overview_vs_one_hop``: authenticated ``GET /organizations/{id}`` vs. the bench-only
  ``GET /_bench/one-hop`` (same token check, one ``org.ping`` RPC), same gateway, same load.
* ``overview_vs_healthz``: the same against ``/healthz`` (no token, no RPC).
* ``auth_overhead``: the gateway's own ``TokenVerifier.verify`` (remembered signature, expiry,
  revocation list) timed in this process on the same token, as a fraction of one overview request
  measured from a single connection (its latency); ``auth_first_sight`` the same with the full
  signature check a token gets the first time a worker sees it.
* ``scale_out``: overview throughput with two org-service processes vs. one.
"""
import os
import time

from bench.harness import Figure, interleaved, warm, wrk, wrk_run
from stack import stack


def overview_figures(inst, client, org_id, token):
    base = inst.gateway_url
    targets = {"overview": (base + f"/api/v1/organizations/{org_id}", token),
               "one_hop": (base + "/api/v1/_bench/one-hop", token),
               "healthz": (base + "/healthz", None)}
    for url, tok in targets.values():
        warm(url, tok)
    rates = interleaved(targets)
    medians = ", ".join(f"{name} {rate:.0f}" for name, rate in rates.items())
    print(f"  throughput (req/s, median of 3): {medians}", flush=True)
    return rates, [
        Figure("overview_vs_one_hop", rates["overview"] / rates["one_hop"], ">= 0.8",
               f'({rates["overview"]:.0f} vs {rates["one_hop"]:.0f} req/s)'),
        Figure("overview_vs_healthz", rates["overview"] / rates["healthz"], ">= 0.5",
               f'({rates["overview"]:.0f} vs {rates["healthz"]:.0f} req/s)'),
    ]


def auth_overhead(inst, org_id, token):
    """Two figures: the steady state (the token was seen before, as with every request after a
    client's first) and, for information, the first sight of a token (full Ed25519 check)."""
    from gateway.auth import KeyRing, TokenVerifier
    from gateway.revocations import RevocationList

    def no_rpc(claims):
        raise AssertionError("a token issued after the list connected needs no RPC")
    revocations = RevocationList(no_rpc)
    revocations.connected(time.time() - 3600)  # as in a gateway whose consumer is connected
    # a little history in the list, as a live gateway has
    for index in range(200):
        revocations.apply({"session_id": f"s{index}", "not_before": time.time()})
    issuer = inst.service_env().get("JWT_ISSUER", "orgplatform")
    keyring = KeyRing([inst.public_key_file])

    def seconds_per_verify(verifier, runs=3000):
        verifier.verify(token)
        started = time.perf_counter()
        for _ in range(runs):
            verifier.verify(token)
        return (time.perf_counter() - started) / runs
    steady = seconds_per_verify(TokenVerifier(keyring, issuer, revocations))
    first_sight = seconds_per_verify(TokenVerifier(keyring, issuer, revocations, remember=0), runs=1000)
    url = inst.gateway_url + f"/api/v1/organizations/{org_id}"
    single = sorted(wrk(url, token, connections=1) for _ in range(3))[1]
    per_request = 1.0 / single
    return [Figure("auth_overhead", steady / per_request, "<= 0.05",
                   f"(verify {steady * 1e6:.1f} us of a {per_request * 1e3:.2f} ms overview; token seen before)"),
            Figure("auth_first_sight", first_sight / per_request, None,
                   f"(full signature check {first_sight * 1e6:.0f} us, once per token and gateway worker)")]


def scale_out(inst, org_id, token):
    """The same load with one org-service process, then with a second one beside it."""
    url = inst.gateway_url + f"/api/v1/organizations/{org_id}"
    one = sorted(wrk(url, token) for _ in range(3))[1]
    replica = stack.start_replica(inst, "org", "org-2")
    try:
        warm(url, token)
        two = sorted(wrk(url, token) for _ in range(3))[1]
    finally:
        stack.stop_pid_file(replica)
    return Figure("scale_out", two / one, None,
                  f"(2 org instances {two:.0f} vs 1: {one:.0f} req/s, {os.cpu_count()} cores for everything)")


def healthz_vs_bare_flask(inst):
    """The gateway's fixed per-request cost: its ``/healthz`` on a private port (no nginx) against
    ``bench/bare_app.py`` run by a gunicorn of the same worker class, threads and keep-alive,
    measured in alternating rounds.

    One worker on each side: wrk's 8 keep-alive connections are spread over a gunicorn's workers by
    whichever worker's accept wins, and on the shared 2-core machine all 8 often land on one of two
    workers (about 2,200 req/s) and as often split (4,600-6,200 req/s), for the gateway and the bare
    app alike, so with two workers each the ratio ranged 0.4-1.7 from run to run and measured the
    split, not the cost. The gateway measured is a second gunicorn of the instance's gateway
    (its environment, broker and settings; its own metrics folder) with ``GATEWAY_WORKERS=1``."""
    import runpy
    import shutil
    import socket

    def free_port():
        with socket.socket() as probe:  # a free loopback port
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]
    bare_port, gateway_port = free_port(), free_port()
    settings = runpy.run_path(os.path.join(stack.ROOT, "gateway", "gunicorn.conf.py"))  # reads GATEWAY_* too
    env = inst.service_env("gateway")
    threads = str(env.get("GATEWAY_THREADS") or settings["threads"])
    metrics_dir = os.path.join(inst.run_dir, "prometheus-one-worker")
    shutil.rmtree(metrics_dir, ignore_errors=True)
    os.makedirs(metrics_dir)
    gunicorn = os.path.join(stack.VENV_BIN, "gunicorn")
    stack.spawn("gateway-one-worker", [gunicorn, "-c", os.path.join(stack.ROOT, "gateway", "gunicorn.conf.py"),
                                       "gateway.app:create_app()"],
                inst.run_dir, inst.log_dir, dict(env, GATEWAY_BIND=f"127.0.0.1:{gateway_port}", GATEWAY_WORKERS="1",
                                                 PROMETHEUS_MULTIPROC_DIR=metrics_dir))
    stack.spawn("bare-flask", [gunicorn, "--bind", f"127.0.0.1:{bare_port}",
                               "--worker-class", "gthread", "--workers", "1", "--threads", threads,
                               "--keep-alive", str(settings["keepalive"]), "bench.bare_app:create_app()"],
                inst.run_dir, inst.log_dir, dict(os.environ))
    pid_files = [os.path.join(inst.run_dir, name + ".pid") for name in ("gateway-one-worker", "bare-flask")]
    try:
        targets = {"gateway": (f"http://127.0.0.1:{gateway_port}/healthz", None),
                   "bare": (f"http://127.0.0.1:{bare_port}/healthz", None)}
        for name, (url, _) in targets.items():
            stack.wait_for(lambda url=url: _answers(url), f"the {name} app")
            warm(url, None)
        rates = interleaved(targets)
    finally:
        for pid_file in pid_files:
            stack.stop_pid_file(pid_file)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    _print_wsgi_micro()
    return Figure("healthz_vs_bare_flask", rates["gateway"] / rates["bare"], ">= 0.9",
                  f'({rates["gateway"]:.0f} vs {rates["bare"]:.0f} req/s, gunicorn 1 worker x {threads} threads each, '
                  'no proxy)')


def _print_wsgi_micro():
    """The same two apps timed through their WSGI callables alone (``bench/wsgi_micro.py``, a process
    of its own): the per-request microseconds behind the ratio, without gunicorn and sockets."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "bench.wsgi_micro"], cwd=stack.ROOT, capture_output=True,
                            text=True, timeout=300, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    for line in result.stdout.splitlines():
        print(f"  WSGI callables alone: {line}", flush=True)


def _answers(url):
    import requests
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def tail_latency(inst, org_id, token, seconds=5):
    """p50 and p99 of the overview and of a write (rename) at 16 and 64 connections, through the proxy;
    the figure is p99 / p50 (goal <= 5: a slow tail is at most five typical requests)."""
    url = inst.gateway_url + f"/api/v1/organizations/{org_id}"
    figures = []
    for label, method, body in (("overview", "GET", None), ("rename", "PATCH", {"name": "Tail Latency Lab"})):
        for connections in (16, 64):
            run = wrk_run(url, token, seconds, connections, method, body)
            print(f'  {label} at {connections} connections: {run["rate"]:.0f} req/s, p50 {run["p50_ms"]:.1f} ms, p99 '
                  f'{run["p99_ms"]:.1f} ms', flush=True)
            figures.append(Figure(f"{label}_p99_over_p50_c{connections}", run["p99_ms"] / run["p50_ms"],
                                  "<= 5", f'(p50 {run["p50_ms"]:.1f} ms, p99 {run["p99_ms"]:.1f} ms, {run["rate"]:.0f} '
                                          'req/s)'))
    return figures
