"""Password hashing runs at most ARGON2_CONCURRENCY hashes at once (each holds ARGON2_MEMORY_KIB):
concurrent logins queue for a slot instead of multiplying the memory. The queue is bounded
(ARGON2_QUEUE waiting, each at most ARGON2_QUEUE_WAIT seconds): the excess is shed at once."""
import threading
import time

import eventlet

from common.errors import DomainError
from services.membership.security import Passwords


def test_concurrent_hashes_are_bounded_and_all_answered():
    passwords = Passwords(time_cost=1, memory_kib=1024, concurrency=2)
    running, peak, lock = [0], [0], threading.Lock()
    real = passwords.hasher

    def counted_hash(password):  # runs in eventlet's OS thread pool
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)  # long enough for every caller to be waiting meanwhile
        try:
            return real.hash(password)
        finally:
            with lock:
                running[0] -= 1
    passwords.hasher = type("CountingHasher", (), {"hash": staticmethod(counted_hash), "verify": real.verify})()
    pool = eventlet.GreenPool()
    hashes = list(pool.imap(passwords.hash, [f"password {index}" for index in range(8)]))
    assert peak[0] == 2
    assert all(passwords.verify(digest, f"password {index}") for index, digest in enumerate(hashes))
    assert not passwords.verify(hashes[0], "wrong") and not passwords.verify(None, "password 0")


def slow_hasher(passwords, seconds):
    real = passwords.hasher

    def slow_hash(password):  # runs in eventlet's OS thread pool
        time.sleep(seconds)
        return real.hash(password)
    passwords.hasher = type("SlowHasher", (), {"hash": staticmethod(slow_hash), "verify": real.verify})()


def attempt(passwords, password):
    started = time.monotonic()
    try:
        passwords.hash(password)
        return "hashed", time.monotonic() - started
    except DomainError as error:
        assert error.code == "service_unavailable" and error.details == {"retry_after": 1}
        return "shed", time.monotonic() - started


def test_beyond_the_queue_hashes_are_shed_at_once():
    """One runs, two wait; the other seven are refused without waiting for anything."""
    passwords = Passwords(time_cost=1, memory_kib=1024, concurrency=1, queue=2, queue_wait=10)
    slow_hasher(passwords, 0.2)
    pool = eventlet.GreenPool()
    results = list(pool.imap(lambda n: attempt(passwords, f"password {n}"), range(10)))
    assert sorted(outcome for outcome, _ in results) == ["hashed"] * 3 + ["shed"] * 7
    assert max(seconds for outcome, seconds in results if outcome == "shed") < 0.1
    # the queue empties again: a later hash is served
    assert attempt(passwords, "later")[0] == "hashed"


def test_a_hash_waits_for_a_slot_at_most_the_queue_wait():
    passwords = Passwords(time_cost=1, memory_kib=1024, concurrency=1, queue=5, queue_wait=0.2)
    slow_hasher(passwords, 1.0)
    pool = eventlet.GreenPool()
    results = list(pool.imap(lambda n: attempt(passwords, f"password {n}"), range(3)))
    assert sorted(outcome for outcome, _ in results) == ["hashed", "shed", "shed"]
    assert all(0.15 < seconds < 0.6 for outcome, seconds in results if outcome == "shed"), results
