"""``nameko run services.<name>.service`` finds exactly one service (common/service.py).

The base class carries an entrypoint (``ping``), so a service module holding it under a name of its
own would make nameko run it as a second service in the same process."""
import pytest
from nameko.cli.run import import_service
from nameko.extensions import is_entrypoint

from common.subscriptions import SERVICE_CLASSES


@pytest.mark.parametrize("path", SERVICE_CLASSES)
def test_a_service_module_holds_one_service_and_it_answers_ping(path):
    module, class_name = path.split(":")
    [found] = import_service(module)  # as `nameko run <module>` does: every class with an entrypoint
    assert found.__name__ == class_name
    assert any(is_entrypoint(extension) for extension in getattr(found.ping, "nameko_entrypoints", ())), \
        "ping is not an entrypoint"
