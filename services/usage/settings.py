"""The usage service's settings, typed, read once from ``config.yml`` (``common/settings.py``)."""
from common import settings

UsageSettings = settings.declare(
    "UsageSettings", "services/usage/config.yml",
    rpc_timeout=float, usage_expiry_seconds=float, usage_repair_seconds=float, usage_storage_lease_seconds=float,
    usage_fault_crash_after_ledger=bool)
