"""What every figure needs: the bench's own stack instance, an HTTP client, wrk, results.

The bench runs on an isolated instance (``TEST_INSTANCE=bench``, ports offset by 300, vhost
``orgplatform-bench``, databases ``bench_*``) so a running dev or test stack is untouched. Every
figure is a ratio of two measurements taken here, in the same run, on the same machine.
"""
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass

import requests

from stack import stack

os.environ.setdefault("TEST_INSTANCE", "bench")
os.environ.setdefault("TEST_PORT_OFFSET", "300")
os.environ["BENCH_ROUTES"] = "1"  # the gateway of this instance registers /api/v1/_bench/one-hop
os.environ.setdefault("STACK_TIMERS", "production")  # housekeeping at its real pace, not the tests' 1 s

BENCH_DIR = os.path.join(stack.ROOT, "var", "bench-work")
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "8"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))


@dataclass
class Figure:
    name: str
    value: float
    goal: str = None          # e.g. ">= 0.8"; None: reported, no goal yet
    note: str = ""

    @property
    def ok(self):
        if not self.goal:
            return True
        op, limit = self.goal.split()
        return self.value >= float(limit) if op == ">=" else self.value <= float(limit)

    def line(self):
        goal = f"goal {self.goal}" if self.goal else "no goal"
        verdict = "" if not self.goal else (", met" if self.ok else ", MISSED")
        return f'{self.name}: {self.value:.3f} ({goal}{verdict}){("  " + self.note if self.note else "")}'


def summary(figures):
    """Print each figure's line, then the names of those that missed their goal; the exit status
    (1 if any did). For the bench's figures and the soak's (anything with ``name``, ``ok`` and
    ``line()``); pytest-style, the verdict is the last line."""
    for figure in figures:
        print(figure.line())
    missed = [figure.name for figure in figures if not figure.ok]
    if missed:
        print("missed: " + ", ".join(missed))
    return 1 if missed else 0


# -- the instance ------------------------------------------------------------------------------

class BenchStack:
    """Starts the isolated instance (and infrastructure only if nothing runs), stops what it started."""

    def __init__(self):
        self.inst = stack.Instance("test")
        self.started_infra = []

    def start(self):
        self.started_infra = stack.start_isolated(self.inst)
        return self.inst

    def stop(self):
        stack.stop_isolated(self.inst, self.started_infra, drop=True)


class Client:
    def __init__(self, inst):
        self.inst = inst
        self.api = inst.gateway_url + "/api/v1"
        self.http = requests.Session()

    def call(self, method, path, token=None, expect=(200,), **kw):
        headers = {"Authorization": "Bearer " + token} if token else {}
        response = self.http.request(method, self.api + path, headers=headers, timeout=30, **kw)
        if response.status_code not in expect:
            raise RuntimeError(f"{method} {path} -> {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None

    def signup(self, org_name=None):
        body = {"email": f"bench-{uuid.uuid4().hex[:12]}@example.test", "password": "bench password 123",
                "name": "Bench Owner", "organization_name": org_name or f"Bench {uuid.uuid4().hex[:8]}"}
        return self.call("POST", "/auth/signup", json=body, expect=(201,))

    def superuser_token(self):
        env = self.inst.service_env()
        return self.call("POST", "/auth/login", json={"email": env["SUPERUSER_EMAIL"],
                                                      "password": env["SUPERUSER_PASSWORD"]})["access_token"]

    def wait(self, check, what, timeout=60, interval=0.1):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(interval)
        raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


# -- HTTP load: wrk ------------------------------------------------------------------------------

def ensure_wrk():
    if shutil.which("wrk"):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, check=True)


def wrk(url, token=None, seconds=SECONDS, connections=CONNECTIONS, method="GET", body=None):
    """Requests per second of ``GET url`` (127.0.0.1 only); fails if any answer was not 2xx."""
    return wrk_run(url, token, seconds, connections, method, body)["rate"]


def wrk_run(url, token=None, seconds=SECONDS, connections=CONNECTIONS, method="GET", body=None):
    """``{"rate": requests/s, "p50_ms", "p99_ms"}`` of ``method url`` (a JSON ``body``, the same for
    every request) from ``connections`` connections; fails if any answer was not 2xx."""
    assert url.startswith("http://127.0.0.1:"), url
    os.makedirs(BENCH_DIR, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", dir=BENCH_DIR, delete=False) as script:
        if token:
            script.write(f"wrk.headers[\"Authorization\"] = \"Bearer {token}\"\n")
        if method != "GET":
            script.write(f"wrk.method = \"{method}\"\n")
        if body is not None:
            script.write("wrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = "
                         f"{json.dumps(json.dumps(body))}\n")
    try:
        result = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                                 "--timeout", "10s", "--latency", "-s", script.name, url],
                                capture_output=True, text=True, check=True)
    finally:
        os.unlink(script.name)
    out = result.stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    if bad or (errors and re.search(r"timeout [1-9]", errors.group(0))):
        raise RuntimeError(f"wrk against {url} saw failures:\n{out}")
    return {"rate": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": _percentile(out, "50"), "p99_ms": _percentile(out, "99")}


def _percentile(out, which):
    """wrk's ``--latency`` line, e.g. ``99%  12.34ms``, in milliseconds."""
    value, unit = re.search(f"^\\s*{which}%\\s+([\\d.]+)(us|ms|s)\\s*$", out, re.M).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def interleaved(targets, rounds=3, seconds=SECONDS, connections=CONNECTIONS):
    """Median throughput of each ``name -> (url, token)``, measured in alternating rounds so drift on
    a shared machine hits every target alike."""
    samples = {name: [] for name in targets}
    for _ in range(rounds):
        for name, (url, token) in targets.items():
            samples[name].append(wrk(url, token, seconds, connections))
    return {name: sorted(values)[len(values) // 2] for name, values in samples.items()}


def warm(url, token, seconds=1, connections=CONNECTIONS):
    wrk(url, token, seconds, connections)
