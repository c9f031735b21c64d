"""A service's settings (``common/settings.py``) as a nameko dependency.

``SettingsProvider(TheSettings)`` injects the object into the service's workers; the service's
other dependency providers and entrypoints (the store provider, timers, metrics) reach it with
:func:`settings_of` -- parsed once per container, whichever asks first.
"""
from nameko.extensions import DependencyProvider

from common.settings import SettingsError


def settings_of(container):
    """The service's settings object, parsed from its config once per container."""
    provider = next((dep for dep in container.dependencies if isinstance(dep, SettingsProvider)), None)
    if provider is None:
        raise SettingsError(f"{container.service_name} declares no SettingsProvider")
    return provider.load()


class SettingsProvider(DependencyProvider):
    """Injects the service's settings (parsed at setup: a bad config fails the start, not a request)."""

    def __init__(self, settings_class):
        self.settings_class = settings_class
        self.settings = None

    def load(self):
        if self.settings is None:
            self.settings = self.settings_class.from_config(self.container.config)
        return self.settings

    def setup(self):
        self.load()

    def get_dependency(self, worker_ctx):
        return self.settings
