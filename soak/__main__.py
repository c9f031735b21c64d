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
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402

_bench_routes = os.environ.get("BENCH_ROUTES")
from bench import memory  # noqa: E402  (its harness switches the bench-only route on; not here)

if _bench_routes is None:
    os.environ.pop("BENCH_ROUTES", None)
else:
    os.environ["BENCH_ROUTES"] = _bench_routes

from soak.workload import Client, Lane, MailIndex, Pacer, Stats, run_lanes  # noqa: E402
from stack import stack  # noqa: E402
from tests.support import wait_until  # noqa: E402


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


@dataclass
class Figure:
    name: str
    value: str
    target: str = None       # None: for information
    ok: bool = True

    def line(self):
        if self.target is None:
            return f"{self.name}: {self.value} (for information)"
        return f'{self.name}: {self.value} (target {self.target}, {("met" if self.ok else "MISSED")})'


def log(message):
    print(f"[soak {time.monotonic() - STARTED:5.0f}s] {message}", flush=True)


STARTED = time.monotonic()


def phase(lanes, pacer, seconds, label):
    log(f"{label}: {seconds:.0f}s at {RATE:g} operations/s on {len(lanes)} threads")
    errors = run_lanes(lanes, pacer, seconds)
    for error in errors:
        print(error, file=sys.stderr, flush=True)


# -- the checks at the end ---------------------------------------------------------------------

def check_mail(lanes, mails):
    """Every invitation sent and every deletion requested gives exactly one mail, no more."""
    expected = [key for lane in lanes for key in lane.sent + lane.confirmations]

    def arrived():
        mails.scan(min_interval=0)
        return all(mails.get(key) for key in expected)
    try:
        wait_until(arrived, timeout=DRAIN, interval=1.0, what="every invitation and confirmation mail")
    except AssertionError:
        pass  # counted below
    mails.scan(min_interval=0)
    missing = [key for key in expected if not mails.get(key)]
    duplicates = [key for key in expected if len(mails.get(key)) > 1]
    invites = mails.count(subject_prefix="You are invited to join ")
    uncertain = {key for lane in lanes for key in lane.uncertain}   # requests without an answer
    stray = [key for key in invites if key not in set(expected) and key not in uncertain]
    duplicates += [key for key in uncertain if len(mails.get(key)) > 1]
    sent = sum(len(lane.sent) for lane in lanes)
    once = sum(1 for lane in lanes for key in lane.sent if len(mails.get(key)) == 1)
    lost = sum(1 for lane in lanes for key in lane.sent if not mails.get(key))
    twice = sum(1 for lane in lanes for key in lane.sent + lane.uncertain if len(mails.get(key)) > 1)
    figures = [Figure("invite_mails_exactly_once",
                      f"{sent} sent, {once} received once, {lost} missing, {twice} duplicated, {len(stray)} unexpected",
                      "every invite: exactly one mail", not missing and not duplicates and not stray)]
    confirmations = [key for lane in lanes for key in lane.confirmations]
    confirmed_once = sum(1 for key in confirmations if len(mails.get(key)) == 1)
    figures.append(Figure("deletion_mails_exactly_once", f"{confirmed_once} of {len(confirmations)}",
        "all", all(len(mails.get(key)) == 1 for key in confirmations)))
    for key in (missing + duplicates + stray)[:10]:
        print(f"  mail {key[0]} {key[1]!r}: {len(mails.get(key))} received", flush=True)
    return figures


def check_deletions(lanes):
    lane_of = {org_id: lane for lane in lanes for org_id in lane.deletions}

    def done():
        return all(lane.poll_deletion(org_id) for org_id, lane in lane_of.items()
                   if not lane.deletions[org_id]["deleted"])
    try:
        wait_until(done, timeout=DRAIN, interval=1.0, what="every deletion to complete")
    except AssertionError:
        pass
    durations = sorted(d["deleted"] - d["requested"] for lane in lanes for d in lane.deletions.values()
                       if d["deleted"])
    completed = len(durations)
    note = (f", requested -> deleted median {durations[len(durations) // 2]:.1f}s, slowest "
            f"{durations[-1]:.1f}s") if durations else ""
    return Figure("deletions_completed", f"{completed} of {len(lane_of)}{note}", "all",
                  completed == len(lane_of))


def ledger_of(lane, org):
    """``(problems, balance)`` of one organization's ledger read through the API as the superuser."""
    entries, cursor, problems, balance = [], None, [], None
    while True:
        params = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        response = lane.c.call("GET", f"/organizations/{org.id}/credits", "GET /organizations/{id}/credits",
                               token=lane.su_token(), params=params)
        if response is None:
            return ["ledger unreadable"], None
        page = response.json()
        if cursor is None:  # the first page's balance: later pages may see newer entries
            balance = page["balance"]
        entries += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    entries.sort(key=lambda e: e["sequence"])
    running = 0
    for position, entry in enumerate(entries, 1):
        running += entry["amount"]
        if entry["sequence"] != position:
            problems.append(f'sequence {entry["sequence"]} at position {position}')
        if entry["balance_after"] != running or running < 0:
            problems.append(f'entry {position}: balance_after {entry["balance_after"]}, running sum {running}')
    if balance != running or balance < 0:
        problems.append(f"balance {balance}, sum of {len(entries)} entries {running}")
    if org.exact and balance != org.balance:
        problems.append(f"balance {balance}, the workload expects {org.balance}")
    usage = lane.c.call("GET", f"/organizations/{org.id}/usage", "GET /organizations/{id}/usage",
                        token=lane.su_token())
    if usage is None or usage.json()["credits"]["balance"] != balance:
        problems.append(f'usage says {(usage.json()["credits"] if usage is not None else "nothing")}')
    return problems, balance


def check_ledgers(lanes):
    """For each organization still alive: the API's balance is the sum of its ledger, never negative
    (at any entry), the usage summary says the same, and the overview's read model catches up."""
    work = [(lane, org) for lane in lanes for org in lane.orgs]
    with ThreadPoolExecutor(len(lanes)) as pool:   # one thread per lane: a lane's client is not shared
        per_lane = list(pool.map(lambda lane: [ledger_of(lane, org) for org in lane.orgs], lanes))
    results = [result for lane_results in per_lane for result in lane_results]
    bad = {}
    for (lane, org), (problems, balance) in zip(work, results, strict=False):
        if problems:
            bad[org.id] = problems
            continue

        def overview_agrees(lane=lane, org=org, balance=balance):
            response = lane.c.call("GET", f"/organizations/{org.id}", "GET /organizations/{id}", token=lane.su_token())
            return response is not None and response.json()["credits"]["balance"] == balance
        try:
            wait_until(overview_agrees, timeout=30, interval=0.5, what=f"overview balance of {org.id}")
        except AssertionError:
            bad[org.id] = [f"overview balance never reached {balance}"]
    for org_id, problems in list(bad.items())[:10]:
        print(f'  ledger {org_id}: {"; ".join(problems[:5])}', flush=True)
    return Figure("ledger_balances_consistent", f"{len(work) - len(bad)} of {len(work)} organizations",
                  "all", not bad)


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
        figures += check_mail(lanes, mails)
        figures.append(check_deletions(lanes))
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
    for figure in figures:
        print(figure.line())
    missed = [figure.name for figure in figures if not figure.ok]
    if missed:
        print("missed: " + ", ".join(missed))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
