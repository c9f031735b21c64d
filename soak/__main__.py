"""`make soak`: warm-up, then SOAK_SECONDS of the mixed workload at SOAK_RATE operations/s, then checks.

Settings (environment): ``SOAK_SECONDS`` (300), ``SOAK_WARMUP_SECONDS`` (60), ``SOAK_RATE``
(operations per second, 6), ``SOAK_THREADS`` (client threads, 4), ``SOAK_DRAIN_SECONDS`` (deadline
for mail and deletions to finish after the workload, 180), ``SOAK_FUZZ_CASES`` (5000: cases of
``tests/test_fuzz.py`` run afterwards on its own instance, when that file exists; 0 skips it),
``SOAK_SEED``. The instance is ``soak`` with ports +500 (``SOAK_INSTANCE``, ``SOAK_PORT_OFFSET``).
"""
import os
import sys

# the soak's own instance, whatever TEST_INSTANCE the calling shell has: set before stack is imported
os.environ["TEST_INSTANCE"] = os.environ.get("SOAK_INSTANCE", "soak")
os.environ["TEST_PORT_OFFSET"] = os.environ.get("SOAK_PORT_OFFSET", "500")
# the production RPC timeout (the test profile shortens it to 3 s so fault tests run fast), and the
# production pace of the housekeeping timers (the test profile ticks every second)
os.environ.setdefault("RPC_TIMEOUT", "5")
os.environ.setdefault("STACK_TIMERS", "production")

import logging  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

_bench_routes = os.environ.get("BENCH_ROUTES")
from bench import memory  # noqa: E402  (its harness switches the bench-only route on; not here)
from bench.harness import summary  # noqa: E402

if _bench_routes is None:
    os.environ.pop("BENCH_ROUTES", None)
else:
    os.environ["BENCH_ROUTES"] = _bench_routes

from soak.checks import Figure, check_deletions, check_ledgers, check_mail  # noqa: E402
from soak.workload import Client, Lane, MailIndex, Pacer, Stats, run_lanes  # noqa: E402
from stack import stack  # noqa: E402


def setting(name, default, kind=float):
    return kind(os.environ.get(name) or default)


SECONDS = setting("SOAK_SECONDS", 300)
WARMUP = setting("SOAK_WARMUP_SECONDS", 60)
RATE = setting("SOAK_RATE", 6)
THREADS = setting("SOAK_THREADS", 4, int)
DRAIN = setting("SOAK_DRAIN_SECONDS", 180)
FUZZ_CASES = setting("SOAK_FUZZ_CASES", 5000, int)
SEED = setting("SOAK_SEED", int(time.time()), int)
MEMORY_GROWTH = memory.GROWTH


def log(message):
    print(f"[soak {time.monotonic() - STARTED:5.0f}s] {message}", flush=True)


STARTED = time.monotonic()


def phase(lanes, pacer, seconds, label):
    log(f"{label}: {seconds:.0f}s at {RATE:g} operations/s on {len(lanes)} threads")
    errors = run_lanes(lanes, pacer, seconds)
    for error in errors:
        print(error, file=sys.stderr, flush=True)


def run_fuzz():
    """tests/test_fuzz.py with more cases, on an instance of its own."""
    env = dict(os.environ, FUZZ_CASES=str(FUZZ_CASES), TEST_INSTANCE="soakfuzz", TEST_PORT_OFFSET="550")
    env.pop("BENCH_ROUTES", None)
    log(f"fuzz: tests/test_fuzz.py with FUZZ_CASES={FUZZ_CASES} (instance soakfuzz)")
    began = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pytest", "tests/test_fuzz.py", "-q"], cwd=stack.ROOT, env=env)
    outcome = "passed" if result.returncode == 0 else f"FAILED (exit {result.returncode})"
    return Figure("fuzz", f"{outcome}, {FUZZ_CASES} cases in {time.monotonic() - began:.0f}s",
                  "pass", result.returncode == 0)


def main():
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.getLogger("amqp").setLevel(logging.ERROR)
    inst = stack.Instance("test")
    log(f"starting instance {inst.name} (gateway {inst.gateway_url}, vhost {inst.vhost}, databases {inst.db_prefix}*)")
    started_infra = stack.start_isolated(inst)
    figures = []
    try:
        stats, mails = Stats(), MailIndex(inst.mail_dir)
        lanes = [Lane(i, Client(inst.gateway_url, stats), mails, stats, SEED * 100 + i) for i in range(THREADS)]
        pacer = Pacer(RATE)
        log(f"seed {SEED}")
        phase(lanes, pacer, WARMUP, "warm-up")
        before = memory.snapshot(inst)
        main_began, samples_before, ops_before = time.monotonic(), len(stats.samples), len(stats.operations)
        phase(lanes, pacer, SECONDS, "workload")
        main_seconds = time.monotonic() - main_began
        samples = stats.samples[samples_before:]
        operations = stats.operations[ops_before:]
        log(f"workload done: {len(operations)} operations, {len(samples)} requests; draining mail and deletions "
            f"(deadline {DRAIN:.0f}s each)")
        figures += check_mail(lanes, mails, DRAIN)
        figures.append(check_deletions(lanes, DRAIN))
        figures.append(check_ledgers(lanes))
        after = memory.snapshot(inst)
        peak, growth = memory.figures(before, after)
        figures.append(Figure("memory_growth", f"{growth.value * 100:.1f} % max (after warm-up -> end, every service "
                                               "and gateway worker)", f"< {MEMORY_GROWTH * 100:g} %",
                              growth.value < MEMORY_GROWTH))
        figures.append(Figure("max_rss", f"{peak.value:.0f} MB"))
        figures.append(Figure("unexpected_statuses", f"{len(stats.unexpected)} of {len(stats.samples)} requests",
                              "0", not stats.unexpected))
        figures.append(Figure("model_mismatches", f"{len(stats.mismatches)}", "0", not stats.mismatches))
        figures.append(Figure("unknown_outcomes", f"{stats.unknown_outcomes} writes without an answer, resolved by "
                                                  "retrying or reading"))
        latencies = sorted(seconds for _, seconds, _ in samples)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
        figures.append(Figure("throughput", f"{len(samples) / main_seconds:.1f} requests/s, "
                                            f"{len(operations) / main_seconds:.1f} operations/s (target rate {RATE:g} "
                                            f"operations/s on {THREADS} threads, {pacer.dropped} slots dropped)"))
        figures.append(Figure("p99_latency", f"{p99 * 1000:.0f} ms (median "
                                             f"{(latencies[len(latencies) // 2] * 1000 if latencies else 0):.0f} ms, "
                                             f"max {(latencies[-1] * 1000 if latencies else 0):.0f} ms)"))
        counts = {}
        for _, name in operations:
            counts[name] = counts.get(name, 0) + 1
        log("operations: " + ", ".join(f"{name} {count}" for name, count in sorted(counts.items())))
        slowest = sorted(((sorted(v)[int(len(v) * 0.99)], len(v), label) for label, v in stats.by_label.items()),
                         reverse=True)[:8]
        log("slowest p99 by request: " + "; ".join(f"{label} {p * 1000:.0f} ms (n={n})"
                                                 for p, n, label in slowest))
        for label, status, body in stats.unexpected[:15]:
            print(f"  unexpected: {label} -> {status} {body}", flush=True)
        for what in stats.mismatches[:15]:
            print(f"  mismatch: {what}", flush=True)
    finally:
        log(f"stopping instance {inst.name}")
        stack.stop_isolated(inst, started_infra)  # its databases stay until the next soak starts (dropping is slow)
    print(f"\nworkload figures ({SECONDS:.0f}s workload after {WARMUP:.0f}s warm-up, seed {SEED}):")
    for figure in figures:
        print(figure.line(), flush=True)
    if FUZZ_CASES and os.path.exists(os.path.join(stack.ROOT, "tests", "test_fuzz.py")):
        figures.append(run_fuzz())
    print(f"\nsoak finished in {time.monotonic() - STARTED:.0f}s")
    return summary(figures)


if __name__ == "__main__":
    sys.exit(main())
