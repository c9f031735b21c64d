"""One typed settings object per service, parsed once at start-up; defaults live only in config.yml.

Why: ``config.get(X) or default`` scattered through the code repeated each default and let copies
drift from ``config.yml`` (an operator name, a base URL, a timeout read by a service whose file had
no such key). Now a service declares its settings once as a frozen dataclass whose field names are
the lower-cased config keys and whose annotations are the types; :meth:`Settings.from_config` reads
each key once and converts it. A key missing from the config is an error at start-up, not a silent
default. ``Optional[...]`` fields take an empty value (``${ENV:}``) as None.

Services inject theirs with ``common.settings_provider.SettingsProvider``; this module imports
no nameko (the gateway and gunicorn's config read their settings through it too).
"""
import dataclasses
import os
import types
import typing

from common.config import load_config


class SettingsError(Exception):
    """A setting is missing from the config or has the wrong type (raised at start-up)."""


def _convert(name, kind, raw):
    optional = typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in typing.get_args(kind)
    if optional:
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
    if raw is None and kind in (tuple, bool):  # an empty list, a switch left off
        return kind()
    if raw is None:
        raise SettingsError(f"{name} has no value")
    try:
        if kind is bool:
            return str(raw).strip().lower() not in ("0", "false", "no", "off", "")
        if kind is tuple:  # comma-separated, blanks dropped
            return tuple(part.strip() for part in str(raw).split(",") if part.strip())
        return kind(raw)
    except (TypeError, ValueError) as error:
        raise SettingsError(f"{name}={raw!r} is not a valid {kind.__name__}") from error


@dataclasses.dataclass(frozen=True)
class Settings:
    """Base of every settings class (the gateway's and the services'): reading and typing."""

    #: the component's config.yml, for :meth:`from_file` (unit tests read the shipped defaults)
    CONFIG_FILE: typing.ClassVar[str] = ""

    @classmethod
    def from_config(cls, config):
        hints = typing.get_type_hints(cls)
        values = {}
        for field in dataclasses.fields(cls):
            key = field.name.upper()
            if key not in config:
                raise SettingsError(f"{key} is missing from the config (defaults live in config.yml)")
            values[field.name] = _convert(key, hints[field.name], config[key])
        return cls(**values)

    @classmethod
    def from_file(cls, env=None, **overrides):
        """The settings the service's own config.yml gives under ``env`` (default: this process's
        environment), with ``overrides`` by key -- what tests and tools compare a service with."""
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), cls.CONFIG_FILE)
        saved = dict(os.environ)
        try:
            if env is not None:  # the YAML placeholders read os.environ
                os.environ.clear()
                os.environ.update(env)
            config = load_config(path)
        finally:
            if env is not None:
                os.environ.clear()
                os.environ.update(saved)
        return cls.from_config(dict(config, **overrides))


@dataclasses.dataclass(frozen=True)
class ServiceSettings(Settings):
    """What every service reads (broker, database, metrics)."""

    amqp_uri: str
    mongo_url: str
    mongo_db_prefix: str | None
    mongo_database: str
    metrics_port: int | None
    metrics_address: str
    metrics_enabled: bool


def declare(name, config_file, base=ServiceSettings, **fields):
    """A frozen settings dataclass ``name`` with ``fields`` (field name -> type) added to ``base``'s,
    read from ``config_file`` (relative to the repository)."""
    return dataclasses.make_dataclass(name, list(fields.items()), bases=(base,), frozen=True,
                                      namespace={"CONFIG_FILE": config_file})
