"""The embedded database on PostgreSQL: Debian's PostgreSQL, a cluster of the project's own, FerretDB's
PostgreSQL handler behind the write-serialising front (``FERRETDB_HANDLER=postgresql``).

Started here on private ports next to whatever the suite runs on, and stopped again: the stack code
that installs, initialises, starts and stops it is exercised on every run, and the front's promise
(no lost update under concurrent guarded writes) is checked on this handler too.
"""
import os
import shutil
import threading

import pymongo
import pytest
from pymongo import ReturnDocument

from stack import stack

WRITERS = 8
ATTEMPTS = 60
LIMIT = 300  # below WRITERS * ATTEMPTS: the guard must refuse the rest


@pytest.fixture(scope="module")
def postgres_ferretdb(tmp_path_factory):
    inst = stack.Instance("test")
    inst.ferretdb_handler = "postgresql"
    inst.mongo_port = _free_port()
    inst.postgres_port = _free_port()
    inst.mongo_url = f"mongodb://127.0.0.1:{inst.mongo_port}/"
    inst.external_mongo = False
    # its own cluster and pid files, away from the suite's database server
    base = os.path.join(stack.ROOT, "var", inst.name, "embedded-postgres")
    shutil.rmtree(base, ignore_errors=True)
    saved = stack.INFRA_RUN, stack.INFRA_LOG, stack.POSTGRES_BASE, stack.FERRETDB_DATA
    stack.INFRA_RUN, stack.INFRA_LOG = os.path.join(base, "run"), os.path.join(base, "log")
    stack.POSTGRES_BASE, stack.FERRETDB_DATA = os.path.join(base, "postgres"), os.path.join(base, "ferretdb")
    try:
        stack.ensure_mongo(inst)
        yield inst
    finally:
        try:
            for name in ("ferretdb", "postgres"):
                stack.stop_infra(name)
        finally:
            stack.INFRA_RUN, stack.INFRA_LOG, stack.POSTGRES_BASE, stack.FERRETDB_DATA = saved
            shutil.rmtree(base, ignore_errors=True)


def _free_port():
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_stack_starts_postgresql_and_ferretdb_on_it(postgres_ferretdb):
    client = pymongo.MongoClient(postgres_ferretdb.mongo_url, serverSelectionTimeoutMS=5000)
    db = client.probe
    db.items.create_index([("org_id", 1), ("sequence", -1)])
    db.items.insert_many([{"org_id": "a" if n % 2 else "b", "sequence": n} for n in range(200)])
    newest = list(db.items.find({"org_id": "a"}).sort("sequence", -1).limit(3))
    assert [doc["sequence"] for doc in newest] == [199, 197, 195]
    assert db.items.count_documents({"org_id": "b"}) == 100
    assert db.items.delete_many({"org_id": "a"}).deleted_count == 100
    # it really is PostgreSQL underneath: the front reports FerretDB, the data lives in the cluster
    assert os.path.exists(os.path.join(stack.POSTGRES_BASE, "data", "PG_VERSION"))
    client.drop_database("probe")


def test_guarded_updates_lose_nothing_through_the_front(postgres_ferretdb):
    """8 writers race a guarded ``$inc`` on one document: exactly LIMIT succeed, none is lost."""
    client = pymongo.MongoClient(postgres_ferretdb.mongo_url, serverSelectionTimeoutMS=5000, maxPoolSize=WRITERS)
    seats = client.probe.seats
    seats.insert_one({"_id": "org", "taken": 0})
    barrier, successes = threading.Barrier(WRITERS), []

    def writer():
        barrier.wait()
        for _ in range(ATTEMPTS):
            if seats.find_one_and_update({"_id": "org", "taken": {"$lt": LIMIT}}, {"$inc": {"taken": 1}},
                                         return_document=ReturnDocument.AFTER) is not None:
                successes.append(1)

    threads = [threading.Thread(target=writer) for _ in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert seats.find_one({"_id": "org"})["taken"] == LIMIT == len(successes)
    client.drop_database("probe")


def test_writes_to_two_databases_in_turn_on_one_connection_lose_no_write_lock(postgres_ferretdb):
    """One connection writing to database A, then at once to B (as a client dropping several
    databases does): the front used to release A's lock only after the client had the answer, so
    B's lock took its place and A's was never released -- every later write to A hung."""
    one = pymongo.MongoClient(postgres_ferretdb.mongo_url, maxPoolSize=1, serverSelectionTimeoutMS=5000,
                              socketTimeoutMS=10000)
    for n in range(300):
        one.turn_a.items.insert_one({"n": n})
        one.turn_b.items.insert_one({"n": n})
    # a writer on another connection gets through at once (the front's take-over waits 30 s)
    other = pymongo.MongoClient(postgres_ferretdb.mongo_url, serverSelectionTimeoutMS=5000, socketTimeoutMS=10000)
    for name in ("turn_a", "turn_b"):
        other[name].items.insert_one({"n": "after"})
        assert other[name].items.count_documents({}) == 301
    one.close()
    other.close()


def test_every_indexed_field_gets_a_gin_mirror_that_postgresql_uses(postgres_ferretdb):
    """The pushed-down equality is ``_jsonb -> 'f' @> value``, which FerretDB's btree indexes
    cannot serve: the front mirrors each indexed field (and ``_id``) with a GIN index, and
    PostgreSQL answers a page read from it instead of scanning every organization's documents."""
    import subprocess
    import time
    client = pymongo.MongoClient(postgres_ferretdb.mongo_url, serverSelectionTimeoutMS=5000)
    db = client.mirror_probe
    db.items.create_index([("pk", 1)])
    db.items.insert_many([{"pk": f"org-{n % 50}/{n // 50}", "n": n} for n in range(5000)])
    psql = [os.path.join(stack.postgres_bin(), "psql"), "-h", "127.0.0.1", "-p", str(postgres_ferretdb.postgres_port),
            "-U", stack.POSTGRES_USER, "-d", stack.POSTGRES_DATABASE, "-tAc"]
    if os.geteuid() == 0:
        psql = stack._as_postgres(psql)

    def sql(query):
        return subprocess.run(psql + [query], check=True, capture_output=True, text=True).stdout.strip()
    deadline = time.monotonic() + 30
    while True:  # the mirror follows createIndexes within moments (and every 5 s)
        defs = sql("SELECT indexdef FROM pg_indexes WHERE schemaname = 'mirror_probe' AND indexname LIKE 'gin\\_%'")
        if "'pk'" in defs and "'_id'" in defs:
            break
        assert time.monotonic() < deadline, defs
        time.sleep(0.2)
    assert "jsonb_path_ops" in defs and "fastupdate" in defs
    table = sql("SELECT tablename FROM pg_tables WHERE schemaname = 'mirror_probe' AND tablename LIKE 'items%'")
    sql(f"ANALYZE mirror_probe.{table}")
    plan = sql(f"EXPLAIN SELECT _jsonb FROM mirror_probe.{table} WHERE _jsonb -> 'pk' @> '\"org-7/3\"'")
    assert "gin_" in plan and "Seq Scan" not in plan, plan
    assert [doc["n"] for doc in db.items.find({"pk": "org-7/3"})] == [157]
    db.items.drop_indexes()  # a FerretDB index dropped: its mirror goes too
    deadline = time.monotonic() + 30
    while "'pk'" in sql("SELECT indexdef FROM pg_indexes WHERE schemaname = 'mirror_probe' AND indexname LIKE "
                        "'gin\\_%'"):
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_a_purge_delete_runs_in_postgresql_and_answers_like_ferretdb(postgres_ferretdb):
    """``common.mongo.purge_delete`` on the embedded database: the front deletes in one SQL
    statement (FerretDB would decode each document and refuse more than 65,535), answers the
    exact count, and leaves every other document alone."""
    import time

    from common.mongo import purge_delete
    client = pymongo.MongoClient(postgres_ferretdb.mongo_url, serverSelectionTimeoutMS=5000)
    db = client.purge_probe
    db.ledger.create_index([("org_id", 1), ("seq", -1)], unique=True)
    for org in ("gone", "kept"):
        docs = [{"_id": f"{org}-{seq}", "org_id": org, "seq": seq, "amount": 1} for seq in range(1, 70001)]
        for start in range(0, len(docs), 10000):
            db.ledger.insert_many(docs[start:start + 10000], ordered=False)
    started = time.perf_counter()
    assert purge_delete(db.ledger, "org_id", ["gone"]) == 70000
    assert time.perf_counter() - started < 20  # FerretDB's own way took minutes on a busy box
    assert db.ledger.count_documents({"org_id": "gone"}) == 0
    assert db.ledger.count_documents({"org_id": "kept"}) == 70000
    # by ids, in chunks; an unknown collection deletes nothing and is no error
    assert purge_delete(db.ledger, "_id", [f"kept-{seq}" for seq in range(1, 12001)] + ["nobody"]) == 12000
    assert db.ledger.count_documents({}) == 58000
    assert purge_delete(db.never_created, "org_id", ["kept"]) == 0
    client.drop_database("purge_probe")
