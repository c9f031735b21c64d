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
    inst.mongo_url = "mongodb://127.0.0.1:%d/" % inst.mongo_port
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
