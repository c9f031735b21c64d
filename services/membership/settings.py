"""The membership service's settings, typed, read once from ``config.yml`` (``common/settings.py``)."""

from common import settings

MembershipSettings = settings.declare(
    "MembershipSettings", "services/membership/config.yml",
    rpc_timeout=float, outbox_sweep_seconds=float, public_base_url=str,
    # tokens and passwords
    jwt_private_key_file=str, jwt_retired_key_files=tuple, jwt_issuer=str, access_token_ttl=int,
    refresh_token_ttl=int, refresh_reuse_grace_seconds=float, argon2_time_cost=int, argon2_memory_kib=int,
    argon2_concurrency=int | None, argon2_queue=int | None, argon2_queue_wait=float,
    # the operator account created at start-up
    superuser_email=str | None, superuser_password=str | None, superuser_name=str,
    # invitations and idempotency keys
    invite_ttl_days=float, invite_token_secret=str | None, invite_idempotency_seconds=float,
    idempotency_seconds=float,
    # rate limits
    login_limit_per_email=int, login_limit_per_address=int, login_limit_window=int, signup_limit_per_address=int,
    signup_limit_window=int, invite_limit_per_org=int, invite_limit_per_inviter=int, invite_limit_window=int)
