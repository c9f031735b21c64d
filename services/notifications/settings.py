"""The notifications service's settings, typed, read once from ``config.yml`` (``common/settings.py``)."""

from common import settings

NotificationsSettings = settings.declare(
    "NotificationsSettings", "services/notifications/config.yml",
    rpc_timeout=float, public_base_url=str, jwt_private_key_file=str,
    # outgoing mail
    smtp_host=str, smtp_port=int, smtp_username=str | None, smtp_password=str | None, smtp_tls=str,
    smtp_timeout_seconds=float, smtp_pool_size=int, smtp_idle_seconds=float, mail_from=str,
    mail_secret_key=str | None,
    # retries and timers
    mail_retry_base_seconds=float, mail_retry_max_seconds=float, mail_max_attempts=int, mail_lease_seconds=float,
    mail_dispatch_interval_seconds=float, reminder_interval_seconds=float)
