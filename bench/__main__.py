"""`make bench`: every figure as a ratio against a baseline measured in the same run.

Starts its own isolated instance (``TEST_INSTANCE=bench``, port offset 300, ``BENCH_ROUTES=1``),
measures, stops it, and ends with one line per figure: ``name: value (goal ...)``. Exits 1 when a
figure misses its goal. ``--profile`` also samples the busy processes with py-spy during the
overview load and the deletion and prints where their time goes. ``--only a,b`` runs a subset
(overview, console, mail, ledger, growth, deletion, audit, scale_out, ...); memory is always reported.
"""
import argparse
import logging
import platform
import sys
import time
import warnings

from bench import (
    abuse,
    cpu,
    deletion,
    floor,
    growth,
    harness,  # sets the bench instance's environment before anything reads it
    mail,
    memory,
    observability,
    quorum,
    throughput,
)
from bench import audit as audit_bench
from bench import console as console_bench
from bench import ledger as ledger_bench
from bench.harness import BenchStack, Client, Figure

PARTS = ("overview", "edge", "tail", "quorum", "console", "mail", "ledger", "growth", "deletion", "audit", "scale_out",
         "observability", "signups", "slow_connections")


def machine():
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "?")
    except OSError:
        model = platform.processor() or "?"
    import os
    with open("/proc/meminfo") as handle:
        mem_gb = int(handle.readline().split()[1]) / 1024 / 1024
    return (f"{os.cpu_count()} cores {model}, {mem_gb:.0f} GB RAM, Linux {platform.release()}, Python "
            f"{platform.python_version()}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", action="store_true", help="sample the busy processes with py-spy")
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated subset of " + ", ".join(PARTS))
    args = parser.parse_args(argv)
    parts = [part.strip() for part in args.only.split(",") if part.strip()]
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.getLogger("amqp").setLevel(logging.ERROR)

    harness.ensure_wrk()
    print(f"machine: {machine()}", flush=True)
    began = time.monotonic()
    bench_stack = BenchStack()
    figures = []
    try:
        inst = bench_stack.start()
        print(f"bench instance up at {inst.gateway_url} ({time.monotonic() - began:.0f}s)", flush=True)
        client = Client(inst)
        owner = client.signup("Overview Bench")
        org_id, token = owner["organization"]["id"], owner["access_token"]
        client.wait(lambda: client.call("GET", f"/organizations/{org_id}", token), "the overview")
        # warm: every process has its pools, proxies and caches before the idle memory snapshot
        for url, tok in ((inst.gateway_url + f"/api/v1/organizations/{org_id}", token),
                         (inst.gateway_url + "/api/v1/_bench/one-hop", token), (inst.gateway_url + "/healthz", None)):
            harness.warm(url, tok, seconds=2)
        for _ in range(3):  # and the account paths every part uses (sign-up, the operator's login)
            client.signup()
            client.superuser_token()
        idle = memory.snapshot(inst)

        if "overview" in parts:
            print("[1/7] overview vs one hop", flush=True)
            profiler = _profiler(args.profile, "overview", inst, ("org", "gateway-worker-1"))
            with profiler:
                _, found = throughput.overview_figures(inst, client, org_id, token)
            figures += found
            figures.extend(throughput.auth_overhead(inst, org_id, token))
        if "edge" in parts:
            print("[1c] the gateway's own cost: /healthz vs a bare Flask app", flush=True)
            figures.append(throughput.healthz_vs_bare_flask(inst))
        if "tail" in parts:
            print("[1d] tail latency at 16 and 64 connections", flush=True)
            figures.extend(throughput.tail_latency(inst, org_id, token))
        if "quorum" in parts:
            print("[1e] a quorum queue next to a classic one", flush=True)
            figures.append(quorum.measure(inst))
        if "console" in parts:
            print("[1b] console overview page vs the API overview", flush=True)
            figures.append(console_bench.measure(inst.gateway_url, owner["user"]["email"], "bench password 123",
                                                 org_id, token))
        if "mail" in parts:
            print("[2/7] mail fan-out", flush=True)
            with _profiler(args.profile, "mail", inst, ("notifications",)):
                figures.append(mail.measure(inst, client))
        if "ledger" in parts:
            print("[3/7] ledger", flush=True)
            with _profiler(args.profile, "ledger", inst, ("usage", "gateway-worker-1")):
                result = ledger_bench.measure(client.api, inst.mongo_url, client.superuser_token(), n=300,
                                              threads=8, scratch_db=inst.db_prefix + "scratch_ledger",
                                              observe=lambda: cpu.measure(inst), settle=lambda: cpu.settle(inst))
            print(f'  reservations (and the {result["settled_seconds"]:.1f} s their events took to settle after the '
                  'last answer): ' + result["ledger_observed"].line(result["n"]), flush=True)
            print("  inserts: " + result["insert_observed"].line(result["n"], "insert"), flush=True)
            if result["failures"]:
                raise RuntimeError(f'{result["failures"]} reservations failed')
            figures.append(Figure("ledger_vs_insert", result["ledger_vs_insert"], ">= 0.25",
                                  f'({result["ledger_rate"]:.0f} reservations/s vs {result["insert_rate"]:.0f} '
                                  'inserts/s)'))
            print("[3a/7] the floor under ledger_vs_insert: the design's hops with no logic on them", flush=True)
            figures.extend(floor.measure(inst, result["insert_rate"]))
        if "growth" in parts:
            print("[3b/7] growth: one organization's pages with 10x data elsewhere and 10x its own", flush=True)
            figures.extend(growth.measure(inst, client))
        if "deletion" in parts:
            print("[4/7] deletion", flush=True)
            with _profiler(args.profile, "deletion", inst, ("membership", "usage", "notifications", "org")):
                figures.extend(deletion.measure(inst, client))
        if "audit" in parts:
            print("[4b/7] audit log verification", flush=True)
            with _profiler(args.profile, "audit", inst, ("audit", "gateway-worker-1")):
                figures.append(audit_bench.measure(inst, client))
        after = memory.snapshot(inst)
        if "scale_out" in parts:
            print("[5/7] scale out", flush=True)
            figures.append(throughput.scale_out(inst, org_id, client.call(
                "POST", "/auth/login", json={"email": owner["user"]["email"],
                                             "password": "bench password 123"})["access_token"]))
        if "observability" in parts:  # after the memory snapshot: it restarts the gateway and org
            print("[5b/7] metrics and JSON logs on vs off", flush=True)
            figures.append(observability.measure(inst, client, org_id, token))
        # after the memory snapshot: the sign-up figure swaps in a membership process of its own
        if "signups" in parts:
            print("[6/7] /healthz under 40 sign-ups", flush=True)
            figures.append(abuse.healthz_under_signups(inst, client))
        if "slow_connections" in parts:
            print("[7/7] /healthz with 200 slow connections", flush=True)
            figures.append(abuse.healthz_with_slow_connections(inst))
        figures += memory.figures(idle, after)
    finally:
        bench_stack.stop()
    print(f"\nbench finished in {time.monotonic() - began:.0f}s on {machine()}")
    return harness.summary(figures)


class _NoProfiler:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _profiler(enabled, label, inst, names):
    if not enabled:
        return _NoProfiler()
    from bench.profile import Profiler
    pids = memory.processes(inst)
    return Profiler(label, {name: pids[name] for name in names if name in pids})


if __name__ == "__main__":
    sys.exit(main())
