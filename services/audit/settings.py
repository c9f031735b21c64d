"""The audit service's settings, typed, read once from ``config.yml`` (``common/settings.py``)."""
from common import settings

AuditSettings = settings.declare(
    "AuditSettings", "services/audit/config.yml",
    audit_retention_days=float, audit_retention_seconds=float, audit_verify_budget_seconds=float)
