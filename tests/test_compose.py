"""Static checks of the container deployment (Dockerfile, .dockerignore, docker-compose.yml).

No Docker needed: the files are parsed. The list of services comes from the ``services/`` folder,
so a new service without a compose entry (or without the environment its config.yml needs) fails
here. Uses no fixture from conftest.py (run with ``--noconftest`` to avoid starting the stack).
"""
import json
import os
import re
import shlex
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPOSE_FILE = os.path.join(ROOT, "docker-compose.yml")
DOCKERFILE = os.path.join(ROOT, "Dockerfile")
DOCKERIGNORE = os.path.join(ROOT, ".dockerignore")
GATEWAY_CONFIG = os.path.join(ROOT, "gateway", "config.yml")
GUNICORN_CONFIG = os.path.join(ROOT, "gateway", "gunicorn.conf.py")
NGINX_TEMPLATE = os.path.join(ROOT, "stack", "nginx", "gateway.conf.template")
PROXY_CONFIG = os.path.join(ROOT, "stack", "nginx", "proxy.yml")

PLACEHOLDER = re.compile(r"\$\{([A-Z0-9_]+)(?::[^}]*)?\}")
PLACEHOLDER_WITH_DEFAULT = re.compile(r"\$\{([A-Z0-9_]+)(?::([^}]*))?\}")
COMPOSE_INTERPOLATION = re.compile(r"\$\{([A-Za-z0-9_]+)(?::?-([^}]*))?\}")
#: ``${VAR:?message}``: required from the host environment, no default (secrets)
COMPOSE_REQUIRED = re.compile(r"\$\{([A-Za-z0-9_]+):?\?[^}]*\}")

# Whatever the config defaults say, these must be set explicitly for containers.
REQUIRED_SERVICE_ENV = {"AMQP_URI", "MONGO_URL"}
REQUIRED_EXTRA_ENV = {
    "membership": {"JWT_PRIVATE_KEY_FILE"},
    "notifications": {"SMTP_HOST"},
    "gateway": {"AMQP_URI", "JWT_PUBLIC_KEY_FILES"},
}
# A setting that makes another unneeded: notifications reads the signing key file only to derive its
# mail key when MAIL_SECRET_KEY is not set (services/notifications/store.py), and only membership
# may read that key.
REPLACED_BY = {"notifications": {"JWT_PRIVATE_KEY_FILE": "MAIL_SECRET_KEY"}}
# Set in compose for the process, not read from a config placeholder.
NON_CONFIG_ENV = {"gateway": {"XDG_RUNTIME_DIR"}}


def discover_services():
    """Every service package under services/ (a folder with __init__.py)."""
    base = os.path.join(ROOT, "services")
    return sorted(name for name in os.listdir(base)
                  if not name.startswith((".", "_")) and os.path.isdir(os.path.join(base, name))
                  and os.path.exists(os.path.join(base, name, "__init__.py")))


SERVICES = discover_services()
APP_SERVICES = SERVICES + ["gateway"]


def interpolate(value):
    """Resolve compose ``${VAR}``, ``${VAR:-default}`` and ``${VAR-default}`` to their defaults."""
    if isinstance(value, dict):
        return {key: interpolate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item) for item in value]
    if isinstance(value, str):
        value = COMPOSE_REQUIRED.sub(lambda m: "required-" + m.group(1).lower(), value)
        return COMPOSE_INTERPOLATION.sub(lambda m: m.group(2) or "", value)
    return value


@pytest.fixture(scope="module")
def compose():
    with open(COMPOSE_FILE) as handle:
        document = yaml.safe_load(handle)
    assert isinstance(document, dict), "docker-compose.yml is not a mapping"
    return document


@pytest.fixture(scope="module")
def services(compose):
    assert isinstance(compose.get("services"), dict), "docker-compose.yml has no services"
    return interpolate(compose["services"])


def environment(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {key: ("" if value is None else str(value)) for key, value in env.items()}


def command(service):
    cmd = service.get("command")
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd or []]


def depends_on(service):
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):  # short syntax means "service_started"
        deps = {name: {"condition": "service_started"} for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def placeholders(path):
    """{VAR: default or None} of every ${VAR:default} in a config file."""
    with open(path) as handle:
        text = handle.read()
    names = set(PLACEHOLDER.findall(text))
    defaults = {name: default for name, default in PLACEHOLDER_WITH_DEFAULT.findall(text)}
    assert names == set(defaults)
    return defaults


def needs_container_value(default):
    """A default that is wrong inside a container: loopback addresses, paths inside the work tree."""
    default = (default or "").strip()
    return bool(re.search(r"127\.0\.0\.1|localhost|\[::1\]", default)) or default.startswith(("var/", "./"))


def required_env(name, config_path):
    defaults = placeholders(config_path)
    required = {var for var, default in defaults.items() if needs_container_value(default)}
    required |= REQUIRED_EXTRA_ENV.get(name, set())
    if name != "gateway":
        required |= REQUIRED_SERVICE_ENV
    return required


def service_config(name):
    return os.path.join(ROOT, "services", name, "config.yml")


def mount_targets(service):
    targets = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            targets.append((volume.get("source"), volume["target"], bool(volume.get("read_only"))))
        else:
            parts = volume.split(":")
            targets.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return targets


def host_ports(service):
    """Host side of every published port (None when Docker picks one)."""
    published = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            published.append(port.get("published"))
        else:
            parts = str(port).rsplit(":", 1)
            published.append(parts[0].rsplit(":", 1)[-1] if len(parts) == 2 else None)
    return published


def dockerfile_instructions():
    with open(DOCKERFILE) as handle:
        text = re.sub(r"\\\n", " ", handle.read())
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            rows.append((keyword.upper(), rest.strip()))
    return rows


# -- the service list itself ---------------------------------------------------------------------

def test_services_are_discovered_from_the_filesystem():
    assert {"org", "membership", "notifications", "usage"} <= set(SERVICES)


@pytest.mark.parametrize("name", SERVICES)
def test_service_package_has_config_and_module(name):
    assert os.path.isfile(service_config(name)), f"services/{name}/config.yml missing"
    assert os.path.isfile(os.path.join(ROOT, "services", name, "service.py"))


def test_compose_file_uses_the_compose_specification(compose):
    assert "version" not in compose, "the compose specification has no `version:` key"
    assert set(compose) <= {"name", "services", "volumes", "networks", "configs", "secrets", "include"} | {
        key for key in compose if key.startswith("x-")}


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_app_service_is_defined(services, name):
    assert name in services, f"docker-compose.yml has no service {name!r}"


# -- infrastructure ------------------------------------------------------------------------------

@pytest.mark.parametrize("name, image", [("mongo", "mongo"), ("mongo-init", "mongo"), ("rabbitmq", "rabbitmq"),
                                         ("mailpit", "axllent/mailpit")])
def test_infrastructure_images_are_pinned(services, name, image):
    """A release tag, never a floating one (``rabbitmq:3-management``, ``mailpit`` latest): the same
    file deploys the same broker tomorrow."""
    assert name in services
    repository, _, tag = services[name].get("image", "").partition(":")
    assert repository == image
    assert re.fullmatch(r"v?\d+\.\d+\.\d+(-management)?", tag), tag


def test_mongo_is_a_replica_set_and_writes_reach_a_majority(services):
    assert command(services["mongo"])[:2] == ["--replSet", "rs0"]
    init = " ".join(command(services["mongo-init"]))
    assert "rs.initiate" in init and "mongo:27017" in init
    assert depends_on(services["mongo-init"]) == {"mongo": "service_healthy"}
    for name in SERVICES:
        url = environment(services[name])["MONGO_URL"]
        for option in ("replicaSet=rs0", "w=majority", "readPreference=primary"):
            assert option in url, (name, url)
        assert depends_on(services[name]).get("mongo-init") == "service_completed_successfully"


@pytest.mark.parametrize("name", APP_SERVICES + ["topology"])
def test_every_component_uses_the_quorum_vhost(services, name):
    assert urlsplit(environment(services[name])["AMQP_URI"]).path == "/orgplatform"



def test_mongo_and_rabbitmq_have_healthchecks_and_volumes(services, compose):
    mongo_test = " ".join(services["mongo"]["healthcheck"]["test"])
    assert "mongosh" in mongo_test and "ping" in mongo_test
    rabbit_test = " ".join(services["rabbitmq"]["healthcheck"]["test"])
    assert "rabbitmq-diagnostics" in rabbit_test and "ping" in rabbit_test
    named_volumes = set(compose.get("volumes") or {})
    for name, path in (("mongo", "/data/db"), ("rabbitmq", "/var/lib/rabbitmq")):
        mounts = {target: source for source, target, _ in mount_targets(services[name])}
        assert mounts.get(path) in named_volumes, f"{name} keeps no data in a named volume"


def test_mailpit_serves_smtp_and_ui(services):
    mailpit = services["mailpit"]
    ports = [str(p) for p in (mailpit.get("expose") or [])] + [str(p) for p in (mailpit.get("ports") or [])]
    assert any(p.split(":")[-1] == "1025" for p in ports)
    assert any(p.split(":")[-1] == "8025" for p in ports)


# -- one-shot steps ------------------------------------------------------------------------------

def test_keygen_writes_the_key_pair_into_the_keys_volume(services, compose):
    keygen = services["keygen"]
    assert keygen.get("image") == "orgplatform:latest" and keygen.get("build")
    cmd = command(keygen)
    assert cmd[:4] == ["python", "-m", "services.membership.keys", "generate"]
    assert cmd[4:] == ["/keys/private/jwt-private.pem", "/keys/public/jwt-private.pub.pem"]
    assert ("signing-key", "/keys/private", False) in mount_targets(keygen)
    assert ("public-key", "/keys/public", False) in mount_targets(keygen)
    assert {"signing-key", "public-key"} <= set(compose.get("volumes") or {})
    assert keygen.get("restart", "no") == "no"


def test_topology_is_declared_once_rabbitmq_is_healthy(services):
    topology = services["topology"]
    assert command(topology)[:3] == ["python", "-m", "common.topology"]
    assert "--users" in command(topology)  # creates the component users first
    assert urlsplit(environment(topology)["AMQP_URI"]).hostname == "rabbitmq"
    assert depends_on(topology) == {"rabbitmq": "service_healthy"}
    assert topology.get("restart", "no") == "no"


# -- application services ------------------------------------------------------------------------

@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_is_built_from_the_one_image(services, name):
    service = services[name]
    build = service.get("build")
    context = build if isinstance(build, str) else (build or {}).get("context")
    assert context in (".", "./"), f"{name} must be built from ./Dockerfile"
    assert service.get("image") == "orgplatform:latest"


@pytest.mark.parametrize("name", SERVICES)
def test_service_command_runs_its_own_config_and_module(services, name):
    cmd = command(services[name])
    assert cmd[:2] == ["nameko", "run"], cmd
    assert cmd[cmd.index("--config") + 1] == f"services/{name}/config.yml"
    assert cmd[-1] == f"services.{name}.service"


def test_gateway_command_runs_gunicorn(services):
    cmd = command(services["gateway"])
    assert cmd[:3] == ["gunicorn", "-c", "gateway/gunicorn.conf.py"]
    assert cmd[-1] == "gateway.app:create_app()"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_is_production_ready_and_scalable(services, name):
    service = services[name]
    assert "container_name" not in service, f"container_name prevents scaling {name}"
    assert service.get("restart") in ("unless-stopped", "always", "on-failure")
    replicas = (service.get("deploy") or {}).get("replicas")
    assert isinstance(replicas, int) and replicas >= 1
    healthcheck = service.get("healthcheck") or {}
    assert healthcheck.get("test") and not healthcheck.get("disable"), f"{name} has no healthcheck"
    assert healthcheck["test"][0] in ("CMD", "CMD-SHELL")
    # the gateway too: only the proxy publishes a port
    assert not service.get("ports"), f"{name} publishes host ports, so it cannot scale"


@pytest.mark.parametrize("name", SERVICES)
def test_service_healthcheck_is_the_probe_module(services, name):
    assert services[name]["healthcheck"]["test"] == ["CMD", "python", "-m", "common.probe"]
    assert os.path.exists(os.path.join(ROOT, "common", "probe.py"))


def test_gateway_listens_on_8080_inside_and_checks_its_own_readiness(services):
    gateway = services["gateway"]
    assert not gateway.get("ports"), "the gateway is reached through nginx only"
    test = gateway["healthcheck"]["test"]
    assert "http://127.0.0.1:8080/readyz/gateway" in " ".join(test)
    if test[:3] == ["CMD", "python", "-c"]:
        compile(test[3], "<gateway healthcheck>", "exec")
    assert environment(gateway).get("GATEWAY_BIND") == "0.0.0.0:8080"


# -- reverse proxy -------------------------------------------------------------------------------

def template_variables():
    with open(NGINX_TEMPLATE) as handle:
        return set(re.findall(r"\$\{([A-Z0-9_]+)\}", handle.read()))


def test_nginx_is_the_official_image_with_a_pinned_version(services):
    image = services["nginx"]["image"]
    name, _, tag = image.partition(":")
    assert name == "nginx" and re.fullmatch(r"\d+\.\d+\.\d+(-[a-z0-9]+)?", tag), image


def test_nginx_publishes_8080_renders_the_stack_template_and_checks_healthz(services):
    nginx = services["nginx"]
    assert "8080" in host_ports(nginx) and any(str(port).endswith(":8080") for port in nginx["ports"])
    mounts = {target: (source, ro) for source, target, ro in mount_targets(nginx)}
    assert mounts["/etc/nginx/templates/default.conf.template"] == ("./stack/nginx/gateway.conf.template", True)
    env = environment(nginx)
    assert mounts[env["PROXY_ERRORS_DIR"]] == ("./stack/nginx/errors", True)
    assert env["PROXY_LISTEN"] == "8080"
    assert "http://127.0.0.1:8080/healthz" in " ".join(nginx["healthcheck"]["test"])
    assert depends_on(nginx).get("gateway") in ("service_started", "service_healthy")
    assert nginx.get("restart") in ("unless-stopped", "always", "on-failure")


def test_nginx_environment_covers_the_template(services):
    env = environment(services["nginx"])
    local_only = {"PROXY_DIR", "PROXY_LOG_DIR"}  # the local stack's main context, not the image's
    missing = template_variables() - set(env) - local_only
    assert not missing, f"nginx: the template needs {sorted(missing)} in the compose environment"
    unknown = set(env) - template_variables()
    assert not unknown, f"nginx: {sorted(unknown)} set in compose but read by nothing"
    assert set(placeholders(PROXY_CONFIG)) - {"PROXY_WORKER_CONNECTIONS"} <= set(env)


def test_nginx_forwards_to_the_gateway_with_the_gateway_limits(services):
    env, gateway = environment(services["nginx"]), environment(services["gateway"])
    host, _, port = env["GATEWAY_UPSTREAM"].partition(":")
    assert host == "gateway" and port == gateway["GATEWAY_BIND"].rsplit(":", 1)[1]
    limits = placeholders(GATEWAY_CONFIG)
    assert env["MAX_REQUEST_BYTES"] == gateway.get("MAX_REQUEST_BYTES", limits["MAX_REQUEST_BYTES"])
    max_url = int(gateway.get("MAX_URL_BYTES", limits["MAX_URL_BYTES"]))
    assert int(env["PROXY_HEADER_BUFFER_BYTES"]) == max_url + 1024


def test_the_gateway_trusts_forwarded_addresses_from_the_edge_network_only(compose, services):
    edge = interpolate(compose["networks"]["edge"])
    subnet = edge["ipam"]["config"][0]["subnet"]
    assert environment(services["gateway"])["FORWARDED_ALLOW_IPS"] == subnet
    members = sorted(name for name, service in services.items() if "edge" in (service.get("networks") or []))
    assert members == ["gateway", "nginx"], members


@pytest.mark.parametrize("name", SERVICES)
def test_service_depends_on_healthy_infrastructure_and_topology(services, name):
    deps = depends_on(services[name])
    assert deps.get("mongo") == "service_healthy"
    assert deps.get("rabbitmq") == "service_healthy"
    assert deps.get("topology") == "service_completed_successfully"
    if name == "membership":
        assert deps.get("keygen") == "service_completed_successfully"


def test_gateway_depends_on_every_service_and_the_key(services):
    deps = depends_on(services["gateway"])
    for name in SERVICES:
        assert deps.get(name) in ("service_started", "service_healthy"), f"gateway does not wait for {name}"
    assert deps.get("keygen") == "service_completed_successfully"


@pytest.mark.parametrize("name", SERVICES)
def test_service_environment_covers_its_config(services, name):
    env = environment(services[name])
    missing = {var for var in required_env(name, service_config(name)) - set(env)
               if REPLACED_BY.get(name, {}).get(var) not in env}
    assert not missing, f"{name}: config.yml needs {sorted(missing)} in the compose environment"
    unknown = set(env) - set(placeholders(service_config(name))) - NON_CONFIG_ENV.get(name, set())
    assert not unknown, f"{name}: {sorted(unknown)} set in compose but read by nothing"


def test_gateway_environment_covers_its_config(services):
    env = environment(services["gateway"])
    missing = required_env("gateway", GATEWAY_CONFIG) - set(env)
    assert not missing, f"gateway: config.yml needs {sorted(missing)} in the compose environment"
    with open(GUNICORN_CONFIG) as handle:
        gunicorn_env = set(re.findall(r"environ\.get\(\s*[\"']([A-Z0-9_]+)", handle.read()))
    assert {"GATEWAY_WORKERS", "GATEWAY_THREADS"} <= set(env)
    unknown = set(env) - set(placeholders(GATEWAY_CONFIG)) - gunicorn_env - NON_CONFIG_ENV["gateway"]
    assert not unknown, f"gateway: {sorted(unknown)} set in compose but read by nothing"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_environment_points_at_compose_services(services, name):
    env = environment(services[name])
    assert urlsplit(env["AMQP_URI"]).hostname == "rabbitmq"
    if name != "gateway":
        assert urlsplit(env["MONGO_URL"]).hostname == "mongo"
    if "SMTP_HOST" in env:
        assert env["SMTP_HOST"] in services


def test_membership_superuser_comes_from_the_host_environment(compose):
    raw = compose["services"]["membership"].get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    for var in ("SUPERUSER_EMAIL", "SUPERUSER_PASSWORD"):
        assert re.fullmatch(f"\\$\\{{{var}(:?-[^}}]*)?\\}}", str(raw.get(var, ""))), var


@pytest.mark.parametrize("name, variable, volume", [("membership", "JWT_PRIVATE_KEY_FILE", "signing-key"),
                                                   ("gateway", "JWT_PUBLIC_KEY_FILES", "public-key")])
def test_key_files_live_in_their_volumes(services, name, variable, volume):
    keygen_files = set(command(services["keygen"])[4:])
    mounts = {target: (source, ro) for source, target, ro in mount_targets(services[name])}
    for path in environment(services[name])[variable].split(","):
        assert path in keygen_files, f"{variable}={path} is not written by keygen"
        assert mounts.get(os.path.dirname(path)) == (volume, True), f"{name}: {volume} not mounted read-only"


def test_the_private_key_is_mounted_into_membership_only(services):
    holders = sorted(name for name, service in services.items() if name != "keygen"
                     and any(source == "signing-key" for source, _, _ in mount_targets(service)))
    assert holders == ["membership"]


@pytest.mark.parametrize("name, variable", [("membership", "INVITE_TOKEN_SECRET"),
                                            ("notifications", "MAIL_SECRET_KEY")])
def test_token_and_mail_secrets_come_from_the_host(compose, name, variable):
    assert required_secret(raw_environment(compose, name)[variable], variable)


# -- image ---------------------------------------------------------------------------------------

def test_dockerfile_runs_as_non_root():
    users = [rest for keyword, rest in dockerfile_instructions() if keyword == "USER"]
    assert users, "Dockerfile has no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0", ""), "the image runs as root"


def test_dockerfile_base_layout_and_code():
    rows = dockerfile_instructions()
    assert ("FROM", "python:3.11-slim") in rows
    assert ("WORKDIR", "/app") in rows
    env = " ".join(rest for keyword, rest in rows if keyword == "ENV")
    assert re.search(r"\bPYTHONPATH=/app\b", env) and re.search(r"\bPYTHONUNBUFFERED=1\b", env)
    runs = " ".join(rest for keyword, rest in rows if keyword == "RUN")
    assert "pip install --no-cache-dir" in runs
    sources = []
    for keyword, rest in rows:
        if keyword == "COPY":
            parts = [part for part in rest.split() if not part.startswith("--")]
            sources += [part.rstrip("/") for part in parts[:-1]]
    for folder in ("common", "services", "gateway"):
        assert folder in sources, f"Dockerfile does not copy {folder}/"
    for unwanted in (".", "", "tests", "bench", "var", ".venv"):
        assert unwanted not in sources, f'Dockerfile copies {unwanted or "/"!r}: copy only what runs'
    cmd = [rest for keyword, rest in rows if keyword == "CMD"]
    assert cmd, "no default CMD"
    argv = json.loads(cmd[-1])
    assert argv[0] not in ("nameko", "gunicorn"), "the default CMD must not start a particular part"


def test_the_image_installs_the_runtime_requirements_only():
    """requirements.txt: runtime packages, then a "# Tests" section the image leaves out."""
    with open(os.path.join(ROOT, "requirements.txt")) as handle:
        lines = handle.read().splitlines()
    cut = lines.index("# Tests")
    runtime = {line.split("==")[0].lower() for line in lines[:cut] if line and not line.startswith("#")}
    test_only = {line.split("==")[0].lower() for line in lines[cut:] if line and not line.startswith("#")}
    assert {"nameko", "kombu", "gunicorn", "pymongo"} <= runtime
    assert {"pytest", "schemathesis", "hypothesis", "playwright"} <= test_only
    runs = " ".join(rest for keyword, rest in dockerfile_instructions() if keyword == "RUN")
    assert "sed '/^# Tests/,$d' /tmp/requirements.txt > /tmp/requirements.runtime.txt" in runs
    assert "-r /tmp/requirements.runtime.txt" in runs


def test_dockerignore_keeps_the_context_small():
    with open(DOCKERIGNORE) as handle:
        patterns = {line.strip().strip("/") for line in handle if line.strip() and not line.startswith("#")}
    for entry in (".venv", "var", ".git", "tests", "bench"):
        assert entry in patterns, f".dockerignore does not exclude {entry}"
    assert "__pycache__" in patterns or "**/__pycache__" in patterns


# -- the broker trusts nobody (common/bus.py) ------------------------------------------------------

def raw_environment(compose, name):
    raw = compose["services"][name].get("environment") or {}
    return dict(item.split("=", 1) for item in raw) if isinstance(raw, list) else raw


def required_secret(value, variable):
    """``value`` is exactly ``${variable:?...}``-based: from the host, no default to fall back on."""
    return re.search(f"\\$\\{{{variable}:\\?[^}}]+\\}}", str(value)) is not None


def test_no_guest_account_anywhere_in_compose():
    with open(COMPOSE_FILE) as handle:
        assert "guest" not in handle.read().lower()


@pytest.mark.parametrize("name", APP_SERVICES)
def test_each_app_service_connects_as_its_own_broker_user(compose, name):
    uri = str(raw_environment(compose, name)["AMQP_URI"])
    user, _, rest = uri.split("//", 1)[1].partition(":")
    assert user == name, f"{name} connects as {user!r}, not as its own broker user"
    password = rest.rsplit("@", 1)[0]
    assert required_secret(password, f"RABBIT_{name.upper()}_PASSWORD"), password


def test_every_component_has_a_distinct_broker_user(services):
    from common import bus
    users = {name: urlsplit(environment(services[name])["AMQP_URI"]).username for name in APP_SERVICES}
    assert set(users.values()) == set(bus.COMPONENTS) and len(set(users.values())) == len(users), users


def test_topology_step_provisions_every_component_user_as_the_broker_administrator(compose, services):
    from common import bus
    rabbit = raw_environment(compose, "rabbitmq")
    topology = raw_environment(compose, "topology")
    assert required_secret(rabbit["RABBITMQ_DEFAULT_PASS"], "RABBIT_ADMIN_PASSWORD")
    admin = urlsplit(environment(services["topology"])["AMQP_URI"])
    assert admin.username == rabbit["RABBITMQ_DEFAULT_USER"] and admin.hostname == "rabbitmq"
    assert required_secret(topology["AMQP_URI"], "RABBIT_ADMIN_PASSWORD")
    assert urlsplit(topology["RABBIT_MANAGEMENT_URL"]).hostname == "rabbitmq"
    for component in bus.COMPONENTS:
        variable = f"RABBIT_{component.upper()}_PASSWORD"
        assert required_secret(topology.get(variable), variable), f"topology cannot create {component}'s user"
    # the administrator's password reaches nobody else
    for name in APP_SERVICES:
        assert "RABBIT_ADMIN_PASSWORD" not in str(raw_environment(compose, name)), name


def test_gateway_waits_for_its_broker_user(services):
    assert depends_on(services["gateway"]).get("topology") == "service_completed_successfully"
