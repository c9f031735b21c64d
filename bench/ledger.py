"""Reservations per second through the gateway vs. a bare insert of the same documents into MongoDB.

Assumes a running stack (``make up``): gateway on GATEWAY_URL (default http://127.0.0.1:8080), the
superuser from SUPERUSER_EMAIL / SUPERUSER_PASSWORD, MongoDB on MONGO_URL. Creates a fresh
organization, grants it enough credits, then runs N reservations from T threads through the
gateway (each a full ledger append: auth, RPC, head read, unique insert, event publish), then
inserts N documents of the same shape into a scratch collection with the same T threads, and prints

    ledger: <r>/s  insert: <i>/s  ledger_vs_insert: <r / i>

Usage: python -m bench.ledger [--n 300] [--threads 8]  (standalone, against a running stack);
`make bench` calls :func:`measure` on its own instance.
"""
import argparse
import contextlib
import os
import sys
import threading
import time
import uuid

import pymongo
import requests


def _login(api, email, password):
    response = requests.post(api + "/auth/login", json={"email": email, "password": password}, timeout=15)
    response.raise_for_status()
    return response.json()["access_token"]


def run_threads(count, threads, work):
    """Run ``work(i)`` for i in range(count) on ``threads`` threads; returns elapsed seconds."""
    lock = threading.Lock()
    next_index = [0]

    def worker():
        while True:
            with lock:
                index = next_index[0]
                next_index[0] += 1
            if index >= count:
                return
            work(index)
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return time.perf_counter() - started


@contextlib.contextmanager
def _nothing():
    yield None


def measure(api, mongo_url, superuser, n=300, threads=8, scratch_db="bench_scratch_ledger", observe=None,
            settle=None):
    """Reservations/s through ``api`` vs. inserts/s of the same documents; returns a dict of the rates.

    ``observe()``: a context manager entered around each of the two timed stretches (the bench's
    per-process CPU accounting, ``bench/cpu.py``); what it yields is returned as ``ledger_observed``
    and ``insert_observed``. ``settle()``: waits until the platform has handled the events of the
    reservations (inside the ledger's observation, after its timing), so that their consumers do
    not run during the inserts."""
    observe = observe or _nothing
    signup = requests.post(api + "/auth/signup", json={
        "email": f"bench-{uuid.uuid4().hex[:10]}@example.test", "password": "bench password 123",
        "name": "Bench", "organization_name": f"Bench {uuid.uuid4().hex[:6]}"}, timeout=15)
    signup.raise_for_status()
    owner, org_id = signup.json()["access_token"], signup.json()["organization"]["id"]
    org = api + f"/organizations/{org_id}"
    deadline = time.monotonic() + 30  # the usage service learns the organization from an event
    while requests.get(org + "/usage", headers={"Authorization": "Bearer " + superuser}, timeout=15).status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError("the usage service did not learn the new organization")
        time.sleep(0.1)
    granted = requests.post(org + "/credits/grants", json={"amount": n * 1000, "idempotency_key": uuid.uuid4().hex},
                            headers={"Authorization": "Bearer " + superuser}, timeout=15)
    granted.raise_for_status()

    session = threading.local()
    failures = []

    def reserve(index):
        http = getattr(session, "http", None) or requests.Session()
        session.http = http
        response = http.post(org + "/credits/reservations", json={
            "amount": 1000, "job_id": f"bench-{index}", "job_type": "bench", "idempotency_key": f"bench-{index}"},
            headers={"Authorization": "Bearer " + owner}, timeout=30)
        if response.status_code != 201:
            failures.append(response.status_code)
    with observe() as ledger_observed:
        ledger_seconds = run_threads(n, threads, reserve)
        settled_seconds = settle() if settle is not None else None

    client = pymongo.MongoClient(mongo_url, tz_aware=True)
    scratch = client[scratch_db]
    scratch.entries.drop()
    template = dict(granted.json()["entry"])

    def insert(index):
        scratch.entries.insert_one(dict(template, _id=uuid.uuid4().hex, org_id=org_id, seq=index + 2,
                                        idempotency_key=f"bench-{index}"))
    with observe() as insert_observed:
        insert_seconds = run_threads(n, threads, insert)
    client.drop_database(scratch_db)
    client.close()
    return {"n": n, "threads": threads, "failures": len(failures), "ledger_seconds": ledger_seconds,
            "ledger_rate": n / ledger_seconds, "insert_rate": n / insert_seconds,
            "ledger_vs_insert": (n / ledger_seconds) / (n / insert_seconds), "ledger_observed": ledger_observed,
            "insert_observed": insert_observed, "settled_seconds": settled_seconds}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="reservations (and inserts)")
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    base = os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080").rstrip("/")
    api = base + "/api/v1"
    mongo_url = os.environ.get("MONGO_URL", "mongodb://127.0.0.1:27017/")
    email, password = os.environ.get("SUPERUSER_EMAIL"), os.environ.get("SUPERUSER_PASSWORD")
    if not email or not password:
        sys.exit("set SUPERUSER_EMAIL and SUPERUSER_PASSWORD")
    result = measure(api, mongo_url, _login(api, email, password), args.n, args.threads)
    print(f'reservations: {args.n} in {result["ledger_seconds"]:.2f}s ({args.threads} threads, {result["failures"]} '
          'failed)')
    print(f'ledger: {result["ledger_rate"]:.1f}/s  insert: {result["insert_rate"]:.1f}/s  ledger_vs_insert: '
          f'{result["ledger_vs_insert"]:.3f}')
    return 0 if not result["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
