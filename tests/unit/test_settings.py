"""Every component's settings parse from its own config.yml, which holds every default; a missing
key or a value of the wrong type stops the start instead of falling back to a default in code."""
import pytest

from common.settings import SettingsError
from gateway.settings import GatewaySettings
from services.audit.settings import AuditSettings
from services.membership.settings import MembershipSettings
from services.notifications.settings import NotificationsSettings
from services.org.settings import OrgSettings
from services.usage.settings import UsageSettings

ALL = (GatewaySettings, MembershipSettings, NotificationsSettings, OrgSettings, UsageSettings, AuditSettings)


@pytest.mark.parametrize("settings_class", ALL, ids=lambda cls: cls.__name__)
def test_the_shipped_config_gives_every_setting(settings_class):
    settings_class.from_file(env={})


def test_values_are_typed_and_empty_optionals_are_none():
    settings = MembershipSettings.from_file(env={"ARGON2_QUEUE": "12", "REFRESH_REUSE_GRACE_SECONDS": "2.5"})
    assert settings.argon2_queue == 12 and settings.refresh_reuse_grace_seconds == 2.5
    assert settings.superuser_email is None and settings.superuser_name == "Platform operator"
    assert settings.jwt_retired_key_files == ()
    assert UsageSettings.from_file(env={}).rpc_timeout == 5.0  # the variable has an effect in usage too


def test_a_missing_key_or_a_wrong_type_stops_the_start():
    with pytest.raises(SettingsError, match="MONGO_URL is missing"):
        MembershipSettings.from_config({"AMQP_URI": "amqp://x"})
    with pytest.raises(SettingsError, match="ACCESS_TOKEN_TTL"):
        MembershipSettings.from_file(env={}, ACCESS_TOKEN_TTL="fifteen minutes")
