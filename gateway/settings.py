"""The gateway's settings, typed, read once from ``gateway/config.yml`` (``common/settings.py``)."""

from common import settings

GatewaySettings = settings.declare(
    "GatewaySettings", "gateway/config.yml", base=settings.Settings,
    amqp_uri=str, rpc_timeout=float, rpc_pool_size=int, jwt_public_key_files=tuple, jwt_issuer=str,
    max_request_bytes=int, max_url_bytes=int, cors_allowed_origins=tuple, bench_routes=bool,
    forwarded_allow_ips=str, bulkhead_hashing=int, bulkhead_export=int, gateway_fault_no_deletion_list=bool,
    overview_cache_seconds=float, console_session_key=str | None, public_base_url=str, metrics_enabled=bool,
    log_format=str, log_level=str)
