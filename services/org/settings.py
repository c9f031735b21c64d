"""The org service's settings, typed, read once from ``config.yml`` (``common/settings.py``)."""
import dataclasses

from common.settings import ServiceSettings


@dataclasses.dataclass(frozen=True)
class OrgSettings(ServiceSettings):
    CONFIG_FILE = "services/org/config.yml"

    outbox_sweep_seconds: float
    org_cache_seconds: float
    deletion_redrive_seconds: float
    deletion_receipt_days: float
