"""Fault injection for the crash-recovery test only (``USAGE_FAULT_CRASH_AFTER_LEDGER``).

Kept out of the domain and the store: when switched on, this dependency wraps the store's outbox
so that the process dies right after a ledger entry is written and before its events are published
-- the crash the ledger's repair timer must recover from (``tests/test_usage.py``).
"""
import os

from nameko.extensions import DependencyProvider

from common.mongo import StoreProvider
from common.settings_provider import settings_of


class CrashAfterLedgerWrite(DependencyProvider):
    def start(self):
        if not settings_of(self.container).usage_fault_crash_after_ledger:
            return
        store = next(dep.store for dep in self.container.dependencies if isinstance(dep, StoreProvider))
        publish_inserted = store.outbox.publish_inserted

        def crash_before_publishing(collection, docs, published=None):
            if collection == "ledger":
                os._exit(1)
            return publish_inserted(collection, docs, published)
        store.outbox.publish_inserted = crash_before_publishing
