"""Config files are YAML with ``${ENV_VAR:default}`` placeholders, exactly as ``nameko run`` reads them."""
import yaml
from nameko.cli.main import setup_yaml_parser

_parser_ready = False


def load_config(path):
    """Load a nameko-style YAML config (used by the gateway, the stack scripts and tests)."""
    global _parser_ready
    if not _parser_ready:
        setup_yaml_parser()
        _parser_ready = True
    with open(path) as handle:
        return yaml.safe_load(handle) or {}


def database_name(config, default):
    """A service's database: ``MONGO_DB_PREFIX`` lets tests and the dev stack share one server."""
    return f'{config.get("MONGO_DB_PREFIX") or ""}{config.get("MONGO_DATABASE") or default}'
