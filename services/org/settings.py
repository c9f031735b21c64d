"""The org service's settings, typed, read once from ``config.yml`` (``common/settings.py``)."""
from common import settings

OrgSettings = settings.declare(
    "OrgSettings", "services/org/config.yml",
    outbox_sweep_seconds=float, org_cache_seconds=float, deletion_redrive_seconds=float, deletion_receipt_days=float)
