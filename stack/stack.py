"""The local stack: installs, starts, stops and reports every part, for `make up` and for tests.

Infrastructure (RabbitMQ, the MongoDB-compatible server) is shared by every instance and started
only if nothing answers on its port; an instance (``dev`` for `make up`, ``test`` for `make test`)
has its own vhost, database prefix, SMTP sink, services and gateway, so tests never touch a running
dev stack. Every process we start gets a pid file; `down` stops exactly those, nothing else.

Only the standard library is imported at module level so `make down` works without the venv.
"""
import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
SERVICES = ("org", "membership", "notifications", "usage", "audit")
RABBIT_HOME = "/usr/lib/rabbitmq/bin"
SECRETS = os.path.join(ROOT, "var", "secrets")
#: the broker administrator a broker we start is created with (see broker_admin)
BROKER_ADMIN = "orgplatform"

sys.path.insert(0, ROOT)
from common import bus  # noqa: E402  (standard library only at import time)

NGINX_DIR = os.path.join(ROOT, "stack", "nginx")
NGINX_BINARY = "/usr/sbin/nginx"
GATEWAY_CONFIG = os.path.join(ROOT, "gateway", "config.yml")


def env_int(name, default):
    return int(os.environ.get(name) or default)


def configured_metrics_port(service):
    """The ``METRICS_PORT`` default of a service's config.yml (``${<SERVICE>_METRICS_PORT:<port>}``),
    read with the standard library: the default lives there only."""
    import re

    with open(os.path.join(ROOT, "services", service, "config.yml")) as handle:
        match = re.search(f"\\$\\{{{service.upper()}_METRICS_PORT:(\\d*)\\}}", handle.read())
    return int(match.group(1)) if match and match.group(1) else None


class Instance:
    """Ports, names and folders of one stack instance."""

    def __init__(self, name):
        test = name == "test"
        # TEST_INSTANCE=<label> gives a parallel test stack of its own (var/<label>, ports + offset)
        self.name = os.environ.get("TEST_INSTANCE", "test") if test else name
        offset = env_int("TEST_PORT_OFFSET", 0) if test else 0
        self.var = os.path.join(ROOT, "var", self.name) if test else os.path.join(ROOT, "var")
        self.run_dir = os.path.join(self.var, "run")
        self.log_dir = os.path.join(self.var, "log")
        self.mail_dir = os.path.join(self.var, "mail")
        self.gateway_host = os.environ.get("GATEWAY_HOST", "127.0.0.1")
        # the public port is nginx's; gunicorn listens on a private loopback port behind it
        self.gateway_port = env_int("TEST_GATEWAY_PORT", 18080 + offset) if test else env_int("GATEWAY_PORT", 8080)
        self.upstream_port = env_int("TEST_GATEWAY_UPSTREAM_PORT", 28080 + offset) if test else env_int(
            "GATEWAY_UPSTREAM_PORT", 8081)
        self.smtp_port = env_int("TEST_SMTP_PORT", 11025 + offset) if test else env_int("SMTP_PORT", 1025)
        # each service's own /metrics port (common/metrics.py); test stacks 19101.. + offset
        self.metrics_ports = {service: (19101 + index + offset) if test else env_int(
            f"{service.upper()}_METRICS_PORT", configured_metrics_port(service) or 0) or None
            for index, service in enumerate(SERVICES)}
        # gunicorn workers' shared prometheus-client files (multiprocess mode, gateway/metrics.py)
        self.metrics_dir = os.path.join(self.var, "prometheus")
        # created with quorum as its default queue type (common.bus.provision): not "/", which the
        # broker created at its first boot with classic queues
        self.vhost = os.environ.get("TEST_RABBIT_VHOST", "orgplatform-" + self.name) if test else os.environ.get(
            "RABBIT_VHOST", "orgplatform")
        self.db_prefix = os.environ.get("TEST_MONGO_DB_PREFIX", self.name + "_") if test else os.environ.get(
            "MONGO_DB_PREFIX", "")
        self.rabbit_host = os.environ.get("RABBIT_HOST", "127.0.0.1")
        # a broker cluster: RABBIT_PORTS (AMQP) and RABBIT_MANAGEMENT_PORTS list every node's port on
        # RABBIT_HOST; components get an AMQP_URI naming each node (kombu's failover syntax)
        self.rabbit_ports = _ports("RABBIT_PORTS") or [env_int("RABBIT_PORT", 5672)]
        self.rabbit_mgmt_ports = _ports("RABBIT_MANAGEMENT_PORTS") or [env_int("RABBIT_MANAGEMENT_PORT", 15672)]
        self.rabbit_port, self.rabbit_mgmt_port = self.rabbit_ports[0], self.rabbit_mgmt_ports[0]
        # broker users of this instance: one per component (common/bus.py) plus the instance's admin;
        # users are global on a broker, so their names carry the instance (stacks share a broker)
        self.rabbit_users = {component: (f"orgplatform-{self.name}-{component}",
                                         _password(self, component))
                             for component in bus.COMPONENTS + (bus.ADMIN,)}
        self._broker_admin = None
        self.mongo_port = env_int("MONGO_PORT", 27017)
        # the embedded FerretDB's storage: "postgresql" (a PostgreSQL cluster of our own) or "sqlite"
        self.ferretdb_handler = os.environ.get("FERRETDB_HANDLER") or "postgresql"
        self.postgres_port = env_int("POSTGRES_PORT", 54329)
        self.postgres_pool = env_int("POSTGRES_POOL_MAX_CONNS", 20)
        self.mongo_url = os.environ.get("MONGO_URL") or f"mongodb://127.0.0.1:{self.mongo_port}/"
        self.external_mongo = bool(os.environ.get("MONGO_URL"))
        self.key_file = os.environ.get("JWT_PRIVATE_KEY_FILE") or os.path.join(ROOT, "var", "keys",
                                                                               "jwt-private.pem")
        self.public_key_file = os.path.splitext(self.key_file)[0] + ".pub.pem"
        self.test = test

    def amqp_uri_for(self, component):
        """The broker URI of one component, with its own user (``admin``: the instance's admin);
        one URL per broker node, separated by ";" (kombu tries them in order, then fails over)."""
        user, password = self.rabbit_users[component]
        vhost = urllib.request.quote(self.vhost, safe="")
        return ";".join(f"amqp://{user}:{password}@{self.rabbit_host}:{port}/{vhost}"
                        for port in self.rabbit_ports)

    @property
    def amqp_uri(self):
        """The instance's admin: declares the topology; tests' taps and tooling use it."""
        return self.amqp_uri_for(bus.ADMIN)

    @property
    def amqp_uri_display(self):
        return self.amqp_uri.replace(f":{self.rabbit_users[bus.ADMIN][1]}@", ":***@")

    def broker_up(self):
        """Some node of the broker answers on its AMQP port."""
        return any(port_open(port, self.rabbit_host) for port in self.rabbit_ports)

    @property
    def gateway_url(self):
        """The public URL: nginx, in front of gunicorn."""
        return f"http://{self.gateway_host}:{self.gateway_port}"

    @property
    def upstream_url(self):
        """gunicorn itself, bypassing the proxy (tests that must know which worker answered)."""
        return f"http://127.0.0.1:{self.upstream_port}"

    def service_env(self, component=None):
        """Environment a service (``component``: its broker user) or the gateway of this instance
        runs with; without a component (tooling, tests) the instance's admin user."""
        env = dict(os.environ)
        env.update({
            "AMQP_URI": self.amqp_uri_for(component or bus.ADMIN),
            "MONGO_URL": self.mongo_url, "MONGO_DB_PREFIX": self.db_prefix,
            "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(self.smtp_port),
            "JWT_PRIVATE_KEY_FILE": self.key_file, "JWT_PUBLIC_KEY_FILES": self.public_key_file,
            "GATEWAY_BIND": f"127.0.0.1:{self.upstream_port}",
            "PYTHONPATH": ROOT, "PYTHONUNBUFFERED": "1",
        })
        if self.test:
            env.update({f"{service.upper()}_METRICS_PORT": str(port) for service, port in self.metrics_ports.items()})
        if component == "gateway":
            env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        # every OS thread (eventlet's thread pool hashes passwords) would get a glibc arena that
        # keeps what it freed: 20 threads x ARGON2_MEMORY_KIB of RSS that never goes back
        env.setdefault("MALLOC_ARENA_MAX", "2")
        # links in mail (the invitation's accept page) lead to this instance's console
        env.setdefault("PUBLIC_BASE_URL", self.gateway_url)
        if not env.get("CONSOLE_SESSION_KEY"):  # seals the console's session cookies, same for every worker
            env["CONSOLE_SESSION_KEY"] = _stored_secret(os.path.join(self.var, "secrets", "console-session.key"))
        # eventlet warns that it is deprecated when `nameko run` first imports it, before logging is
        # set up: a multi-line text in a log of JSON lines (common/logs.py). Known; not news per start.
        env.setdefault("PYTHONWARNINGS", "ignore::Warning:nameko.cli.commands,ignore::Warning:nameko.messaging")
        if self.test:  # cheap hashing keeps the suite fast; production keeps argon2's defaults
            env.setdefault("ARGON2_TIME_COST", "1")
            env.setdefault("ARGON2_MEMORY_KIB", "1024")
            env.setdefault("RPC_TIMEOUT", "3")
            env.setdefault("CORS_ALLOWED_ORIGINS", "https://app.example.test")
            env.setdefault("LOGIN_LIMIT_PER_ADDRESS", "100000")  # the whole suite logs in from 127.0.0.1
            env.setdefault("REFRESH_REUSE_GRACE_SECONDS", "2")  # the reuse test waits the window out
            env.setdefault("SIGNUP_LIMIT_PER_ADDRESS", "100000")  # ... and signs up from there
            # the fuzzing and soak invite thousands of emails through a few owners; the limits
            # themselves are tested on a membership process of their own (tests/test_abuse.py)
            env.setdefault("INVITE_LIMIT_PER_ORG", "100000")
            env.setdefault("INVITE_LIMIT_PER_INVITER", "100000")
            if os.environ.get("STACK_TIMERS") != "production":  # the bench and soak measure the real pace
                # mail: short retry backoff and fast timers so outage/recovery tests take seconds
                env.setdefault("MAIL_RETRY_BASE_SECONDS", "0.5")
                env.setdefault("MAIL_RETRY_MAX_SECONDS", "2")
                env.setdefault("MAIL_MAX_ATTEMPTS", "6")
                env.setdefault("MAIL_DISPATCH_INTERVAL_SECONDS", "0.3")
                env.setdefault("REMINDER_INTERVAL_SECONDS", "0.5")
                env.setdefault("SMTP_TIMEOUT_SECONDS", "5")
                # usage: grant expiry and repair timers tick every second in tests
                env.setdefault("USAGE_EXPIRY_SECONDS", "1")
                env.setdefault("USAGE_REPAIR_SECONDS", "1")
                # audit: a retention run every second (each run is claimed; tests/test_audit.py)
                env.setdefault("AUDIT_RETENTION_SECONDS", "1")
                # audit: a verification call checks one bulk read (256 entries) and says where to go on
                env.setdefault("AUDIT_VERIFY_BUDGET_SECONDS", "0")
            env["SUPERUSER_EMAIL"] = "superuser@example.test"
            env["SUPERUSER_PASSWORD"] = "superuser-test-password"
        return env


def _ports(name):
    return [int(port) for port in os.environ.get(name, "").split(",") if port.strip()]


def _password(inst, component):
    """``RABBIT_<COMPONENT>_PASSWORD``, else generated once per install and instance (never committed:
    under var/, readable by the owner only)."""
    given = os.environ.get(f"RABBIT_{component.upper()}_PASSWORD")
    if given:
        return given
    return _stored_secret(os.path.join(inst.var, "secrets", f"rabbit-{component}.password"))


def _stored_secret(path):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    value = secrets.token_hex(24)  # URL-safe: it goes into AMQP URIs as is
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    try:
        os.link(path + ".tmp", path)  # two stacks starting at once: the first one's secret wins
    except FileExistsError:
        pass
    os.unlink(path + ".tmp")
    with open(path) as handle:
        return handle.read().strip()


# -- small process helpers -------------------------------------------------------------------

def port_open(port, host="127.0.0.1", timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(check, what, timeout=60, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


def read_pid(pid_file):
    try:
        with open(pid_file) as handle:
            pid = int(handle.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def spawn(name, argv, run_dir, log_dir, env=None, cwd=ROOT):
    os.makedirs(run_dir, exist_ok=True)
    os.makedirs(log_dir, exist_ok=True)
    log = open(os.path.join(log_dir, name + ".log"), "ab")
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    with open(os.path.join(run_dir, name + ".pid"), "w") as handle:
        handle.write(str(process.pid))
    return process.pid


def stop_pid_file(pid_file, sig=signal.SIGTERM, timeout=15):
    """Stop the process group started under ``pid_file``; True if something was running."""
    pid = read_pid(pid_file)
    if pid is None:
        if os.path.exists(pid_file):
            os.unlink(pid_file)
        return False
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _group_alive(pid):
        time.sleep(0.1)
    if _group_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wait_for(lambda: not _group_alive(pid), f"process group {pid} to exit", timeout=10)
    os.unlink(pid_file)
    return True


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # zombies of our own children still count as members; reap them
    try:
        while os.waitpid(-pgid, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    try:
        os.killpg(pgid, 0)
        return _has_live_member(pgid)
    except ProcessLookupError:
        return False


def _has_live_member(pgid):
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
        except (OSError, IndexError, ValueError):
            continue
    return False


def run(argv, **kwargs):
    print("+ " + " ".join(argv), flush=True)
    subprocess.run(argv, check=True, **kwargs)


# -- infrastructure ----------------------------------------------------------------------------

INFRA_RUN = os.path.join(ROOT, "var", "run")
INFRA_LOG = os.path.join(ROOT, "var", "log")
INFRA = ("ferretdb", "postgres", "rabbitmq")  # stopped in this order: FerretDB before its PostgreSQL
POSTGRES_USER = "postgres"  # Debian's package creates it; initdb and postgres refuse to run as root
POSTGRES_DATABASE = "ferretdb"
POSTGRES_BASE = os.path.join(ROOT, "var", "postgres")  # the cluster (data/) and its socket folder (run/)
FERRETDB_DATA = os.path.join(ROOT, "var", "ferretdb")  # SQLite files, FerretDB's private socket
EPMD_PORT = 4369
EPMD_MARKER = os.path.join(INFRA_RUN, "epmd.started")


def stop_infra(name):
    """Stop ``ferretdb`` or ``rabbitmq`` if a stack started it (pid file); True if it was running.

    epmd, which rabbitmq-server starts as a detached daemon, is stopped only if it was started
    together with our rabbitmq (marker written by :func:`ensure_rabbitmq`)."""
    stopped = stop_pid_file(os.path.join(INFRA_RUN, name + ".pid"), timeout=30)
    if name == "rabbitmq" and stopped and os.path.exists(EPMD_MARKER):
        stop_epmd()
        os.unlink(EPMD_MARKER)
    return stopped


def stop_epmd():
    subprocess.run(["epmd", "-kill"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def install_rabbitmq():
    """Debian's rabbitmq-server, installed when missing (the local broker, the fault test's cluster)."""
    if not os.path.exists(os.path.join(RABBIT_HOME, "rabbitmq-server")):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(["apt-get", "update", "-qq"], env=env)
        run(["apt-get", "install", "-y", "-qq", "rabbitmq-server"], env=env)


def ensure_rabbitmq(inst):
    if not inst.broker_up():
        install_rabbitmq()
        base = os.path.join(ROOT, "var", "rabbitmq")
        os.makedirs(os.path.join(base, "mnesia"), exist_ok=True)
        os.makedirs(os.path.join(base, "log"), exist_ok=True)
        with open(os.path.join(base, "enabled_plugins"), "w") as handle:
            handle.write("[rabbitmq_management].\n")
        # a broker we start has no guest: its first boot creates our administrator instead
        admin_user, admin_password = _own_broker_admin()
        with open(os.path.join(base, "rabbitmq.conf"), "w") as handle:
            handle.write(f"default_user = {admin_user}\ndefault_pass = "
                         f"{admin_password}\ndefault_user_tags.administrator = true\ndefault_permissions.configure = "
                         ".*\ndefault_permissions.read = .*\ndefault_permissions.write = .*\n")
        os.chmod(os.path.join(base, "rabbitmq.conf"), 0o600)
        env = dict(os.environ, RABBITMQ_NODENAME="orgplatform@localhost",
                   RABBITMQ_MNESIA_BASE=os.path.join(base, "mnesia"),
                   RABBITMQ_LOG_BASE=os.path.join(base, "log"),
                   RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(base, "enabled_plugins"),
                   RABBITMQ_CONFIG_FILE=os.path.join(base, "rabbitmq.conf"),
                   RABBITMQ_PID_FILE=os.path.join(base, "rabbit.pid"),
                   RABBITMQ_NODE_PORT=str(inst.rabbit_port),
                   RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-rabbitmq_management tcp_config "
                                                       f"[{{port,{inst.rabbit_mgmt_port}}}]",
                   HOME=os.environ.get("HOME") or "/root")
        print("starting rabbitmq (logs in var/rabbitmq/log)", flush=True)
        epmd_was_up = port_open(EPMD_PORT)
        spawn("rabbitmq", [os.path.join(RABBIT_HOME, "rabbitmq-server")], INFRA_RUN, INFRA_LOG, env)
        wait_for(lambda: port_open(inst.rabbit_port, inst.rabbit_host), f"rabbitmq on {inst.rabbit_port}",
                 timeout=120)
        if not epmd_was_up and port_open(EPMD_PORT):
            # rabbitmq-server started the Erlang port mapper (a daemon outside its process group):
            # remember that, so stopping rabbitmq stops it too -- and never an epmd someone else runs
            with open(EPMD_MARKER, "w") as handle:
                handle.write("started with rabbitmq\n")
    wait_for(lambda: _management_ok(inst), f"rabbitmq management API on {inst.rabbit_mgmt_port}",
             timeout=60)
    # the vhost, each component's user and its least-privilege permissions (idempotent)
    bus.provision(_management_api(inst), inst.vhost, inst.rabbit_users)


def _own_broker_admin():
    """Administrator of a broker this project starts: ``RABBIT_USER``/``RABBIT_PASSWORD`` if given,
    else ``orgplatform`` with a password generated once under var/secrets/."""
    if os.environ.get("RABBIT_USER"):
        return os.environ["RABBIT_USER"], os.environ.get("RABBIT_PASSWORD", "")
    return BROKER_ADMIN, _stored_secret(os.path.join(SECRETS, "rabbitmq-admin.password"))


def broker_admin(inst):
    """Credentials the stack manages the broker with (vhosts, users, permissions); never given to a
    process. ``RABBIT_USER``/``RABBIT_PASSWORD`` if set; else our own administrator (a broker this
    project started); else, on a broker someone else installed that still has it, Debian's
    ``guest`` -- only to create this instance's users, which is all any process then uses."""
    if inst._broker_admin is None:
        if os.environ.get("RABBIT_USER"):
            candidates = [_own_broker_admin()]
        else:
            candidates = [_own_broker_admin(), ("guest", "guest")]
        for user, password in candidates:
            try:
                bus.Management(_management_url(inst), user, password)("GET", "/api/whoami")
            except urllib.error.HTTPError as error:
                if error.code == 401:
                    continue
                raise
            inst._broker_admin = (user, password)
            break
        else:
            raise RuntimeError(f"no administrator of the broker at {_management_url(inst)}: set RABBIT_USER and "
                               "RABBIT_PASSWORD")
    return inst._broker_admin


def _management_url(inst):
    """The management API of the first node that answers (a cluster's nodes share it all)."""
    for port in inst.rabbit_mgmt_ports:
        if port_open(port, inst.rabbit_host):
            return f"http://{inst.rabbit_host}:{port}"
    return f"http://{inst.rabbit_host}:{inst.rabbit_mgmt_port}"


def _management_api(inst):
    return bus.Management(_management_url(inst), *broker_admin(inst))


def _management(inst, method, path, body=None):
    return _management_api(inst)(method, path, body)


def _management_ok(inst):
    try:
        _management(inst, "GET", "/api/overview")
        return True
    except (OSError, urllib.error.URLError, ValueError, RuntimeError):
        return False


def reset_vhost(inst):
    """Tests start from an empty vhost (no leftover messages from an earlier run)."""
    path = f'/api/vhosts/{urllib.request.quote(inst.vhost, safe="")}'
    try:
        _management(inst, "DELETE", path)
    except urllib.error.HTTPError as error:
        if error.code != 404:
            raise
    ensure_rabbitmq(inst)


def ferretdb_binary():
    return os.path.join(ROOT, "var", "bin", "ferretdb-local")


def build_ferretdb():
    source = os.path.join(ROOT, "stack", "ferretdb")
    binary = ferretdb_binary()
    newest_source = max(os.path.getmtime(os.path.join(source, f)) for f in os.listdir(source))
    if os.path.exists(binary) and os.path.getmtime(binary) >= newest_source:
        return binary
    if not shutil.which("go") and not os.path.exists("/usr/local/go/bin/go"):
        raise RuntimeError("Go is needed to build the local MongoDB-compatible server (FerretDB)")
    go = shutil.which("go") or "/usr/local/go/bin/go"
    print("building FerretDB (embedded) -- first time takes about a minute", flush=True)
    os.makedirs(os.path.dirname(binary), exist_ok=True)
    run([go, "build", "-o", binary, "."], cwd=source, env=dict(os.environ, CGO_ENABLED="0"))
    return binary


def ensure_mongo(inst):
    if inst.external_mongo:
        _wait_mongo(inst)
        return
    if not port_open(inst.mongo_port):
        binary = build_ferretdb()
        argv = [binary, "-listen", f"127.0.0.1:{inst.mongo_port}", "-data", FERRETDB_DATA,
                "-handler", inst.ferretdb_handler]
        if inst.ferretdb_handler == "postgresql":
            ensure_postgres(inst)
            argv += ["-postgresql-url", f"postgres://{POSTGRES_USER}@127.0.0.1:{inst.postgres_port}/{POSTGRES_DATABASE}?pool_max_conns={inst.postgres_pool}"]
        spawn("ferretdb", argv, INFRA_RUN, INFRA_LOG)
        wait_for(lambda: port_open(inst.mongo_port), f"ferretdb on {inst.mongo_port}", timeout=60)
    _wait_mongo(inst)


def postgres_bin():
    """The newest installed PostgreSQL's binaries (Debian keeps them in /usr/lib/postgresql/<major>/bin)."""
    base = "/usr/lib/postgresql"
    versions = sorted((d for d in os.listdir(base) if d.isdigit()), key=int) if os.path.isdir(base) else []
    return os.path.join(base, versions[-1], "bin") if versions else None


def _as_postgres(argv):
    """``argv`` run as the unprivileged PostgreSQL user (setpriv execs: no extra parent process)."""
    return ["setpriv", "--reuid", POSTGRES_USER, "--regid", POSTGRES_USER, "--init-groups", "--"] + argv


def _traversable(path):
    """Let the PostgreSQL user reach ``path``: execute (not read) permission on every ancestor.

    A checkout under a private folder (mktemp -d makes 0700) is otherwise out of its reach."""
    path = os.path.abspath(path)
    while True:
        parent = os.path.dirname(path)
        if parent == path:
            return
        mode = os.stat(parent).st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)
        path = parent


def ensure_postgres(inst):
    """Debian's PostgreSQL with a cluster of our own under var/postgres (UTF8, C locale, trust auth on
    loopback only, a Unix socket in the data folder), started like every other part by pid file."""
    if port_open(inst.postgres_port):
        return
    if postgres_bin() is None:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(["apt-get", "update", "-qq"], env=env)
        run(["apt-get", "install", "-y", "-qq", "postgresql"], env=env)
    import pwd
    bin_dir = postgres_bin()
    owner = pwd.getpwnam(POSTGRES_USER)
    base = POSTGRES_BASE
    data, socket_dir = os.path.join(base, "data"), os.path.join(base, "run")
    for folder in (base, socket_dir):
        os.makedirs(folder, exist_ok=True)
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    _traversable(base)
    if not os.path.exists(os.path.join(data, "PG_VERSION")):
        print("creating the PostgreSQL cluster for FerretDB (var/postgres)", flush=True)
        run(_as_postgres([os.path.join(bin_dir, "initdb"), "-D", data, "-U", POSTGRES_USER, "--encoding=UTF8",
                          "--locale=C", "--auth=trust"]), stdout=subprocess.DEVNULL)
    spawn("postgres", _as_postgres([
        os.path.join(bin_dir, "postgres"), "-D", data, "-p", str(inst.postgres_port),
        "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=" + socket_dir,
        "-c", f"max_connections={max(100, 2 * inst.postgres_pool + 20)}",
        # FerretDB binds the field name of every pushed-down filter as a parameter: only a plan made
        # with its value can use the GIN mirrors (stack/ferretdb/mirror.go sets it per connection too)
        "-c", "plan_cache_mode=force_custom_plan",
        # a development and test database: durability across power loss is not its job
        "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]),
        INFRA_RUN, INFRA_LOG)
    wait_for(lambda: port_open(inst.postgres_port), f"postgres on {inst.postgres_port}", timeout=60)
    psql = [os.path.join(bin_dir, "psql"), "-h", "127.0.0.1", "-p", str(inst.postgres_port), "-U", POSTGRES_USER,
            "-d", "postgres", "-tAc"]
    found = subprocess.run(psql + [f"SELECT 1 FROM pg_database WHERE datname = '{POSTGRES_DATABASE}'"],
                           check=True, capture_output=True, text=True).stdout.strip()
    if found != "1":
        subprocess.run(psql + [f"CREATE DATABASE {POSTGRES_DATABASE}"], check=True, stdout=subprocess.DEVNULL)


def _wait_mongo(inst):
    import pymongo
    client = pymongo.MongoClient(inst.mongo_url, serverSelectionTimeoutMS=2000)

    def ping():
        try:
            client.admin.command("ping")
            return True
        except pymongo.errors.PyMongoError:
            return False
    wait_for(ping, f"MongoDB at {inst.mongo_url}", timeout=60)
    client.close()


def drop_databases(inst):
    import pymongo
    client = pymongo.MongoClient(inst.mongo_url, serverSelectionTimeoutMS=5000)
    for name in client.list_database_names():
        if inst.db_prefix and name.startswith(inst.db_prefix):
            client.drop_database(name)
    client.close()


# -- the instance's own processes ----------------------------------------------------------------

def _pid_file(inst, name):
    return os.path.join(inst.run_dir, name + ".pid")


def is_running(inst, name):
    return read_pid(_pid_file(inst, name)) is not None


def start_smtp_sink(inst):
    if is_running(inst, "smtp"):
        return
    spawn("smtp", [os.path.join(VENV_BIN, "python"), "-m", "stack.smtp_sink", "--port", str(inst.smtp_port),
                   "--dir", inst.mail_dir], inst.run_dir, inst.log_dir, inst.service_env())
    wait_for(lambda: port_open(inst.smtp_port), f"smtp sink on {inst.smtp_port}", timeout=30)


def declare_topology(inst):
    env = inst.service_env()
    subprocess.run([os.path.join(VENV_BIN, "python"), "-m", "common.topology", inst.amqp_uri],
                   cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def ensure_key(inst):
    if not os.path.exists(inst.key_file) or not os.path.exists(inst.public_key_file):
        subprocess.run([os.path.join(VENV_BIN, "python"), "-m", "services.membership.keys", "generate",
                        inst.key_file, inst.public_key_file], cwd=ROOT, env=inst.service_env(), check=True)


def service_argv(service):
    return [os.path.join(VENV_BIN, "nameko"), "run", "--config", os.path.join("services", service, "config.yml"),
            f"services.{service}.service"]


def start_service(inst, service):
    if is_running(inst, service):
        return False
    spawn(service, service_argv(service), inst.run_dir, inst.log_dir, inst.service_env(service))
    return True


def rpc_consumers(inst, service):
    """How many processes of ``service`` consume its RPC queue right now (management API)."""
    path = f'/api/queues/{urllib.request.quote(inst.vhost, safe="")}/rpc-{service}'
    return (_management(inst, "GET", path) or {}).get("consumers", 0)


def start_replica(inst, service, label, env=None, timeout=60):
    """One more process of ``service`` beside the running ones (tests, benchmarks); returns its pid file.

    Returns once the new process consumes the service's RPC queue."""
    before = rpc_consumers(inst, service)
    spawn(label, service_argv(service), inst.run_dir, inst.log_dir, env or inst.service_env(service))
    wait_for(lambda: rpc_consumers(inst, service) > before or not is_running(inst, label),
             f"{label} to consume rpc-{service}", timeout=timeout, interval=0.2)
    if not is_running(inst, label):
        raise RuntimeError(f'{label} exited; see {os.path.join(inst.log_dir, label + ".log")}')
    return _pid_file(inst, label)


def start_gateway(inst):
    if is_running(inst, "gateway"):
        return False
    if os.path.isdir(inst.metrics_dir):  # the previous gunicorn's files: counters start at zero
        shutil.rmtree(inst.metrics_dir)
    os.makedirs(inst.metrics_dir)
    spawn("gateway", [os.path.join(VENV_BIN, "gunicorn"), "-c", os.path.join(ROOT, "gateway", "gunicorn.conf.py"),
                      "gateway.app:create_app()"], inst.run_dir, inst.log_dir, inst.service_env("gateway"))
    return True


def _settings(path, env):
    """``{NAME: value}`` of a ``NAME: ${VAR:default}`` config file, resolved against ``env`` (the
    stack imports only the standard library, so not through nameko's YAML loader)."""
    import re
    values = {}
    with open(path) as handle:
        for name, var, default in re.findall(r"^([A-Z][A-Z0-9_]*):\s*\$\{([A-Z0-9_]+):?([^}]*)\}", handle.read(), re.M):
            values[name] = env.get(var) or default
    return values


def _render(template, values):
    import re
    with open(os.path.join(NGINX_DIR, template)) as handle:
        text = handle.read()
    text = re.sub(r"\$\{([A-Z0-9_]+)\}", lambda m: str(values[m.group(1)]), text)
    return text


def proxy_values(inst, env=None):
    """What the nginx templates are rendered with: the proxy's settings and the gateway's limits."""
    env = env or inst.service_env()
    gateway = _settings(GATEWAY_CONFIG, env)
    values = _settings(os.path.join(NGINX_DIR, "proxy.yml"), env)
    proxy_dir = os.path.join(inst.var, "nginx")
    values.update({
        "PROXY_LISTEN": f"{inst.gateway_host}:{inst.gateway_port}",
        "GATEWAY_UPSTREAM": f"127.0.0.1:{inst.upstream_port}",
        "MAX_REQUEST_BYTES": gateway["MAX_REQUEST_BYTES"],
        "PROXY_HEADER_BUFFER_BYTES": int(gateway["MAX_URL_BYTES"]) + 1024,
        "PROXY_ERRORS_DIR": os.path.join(NGINX_DIR, "errors"),
        "PROXY_DIR": proxy_dir, "PROXY_LOG_DIR": inst.log_dir,
    })
    return values


def ensure_nginx():
    """Debian's nginx, installed like rabbitmq-server when missing."""
    if not os.path.exists(NGINX_BINARY):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(["apt-get", "update", "-qq"], env=env)
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nginx"], env=env)


def start_proxy(inst):
    """nginx on the instance's public gateway port, in front of gunicorn's private one."""
    if is_running(inst, "nginx"):
        return False
    ensure_nginx()
    values = proxy_values(inst)
    os.makedirs(values["PROXY_DIR"], exist_ok=True)
    os.makedirs(inst.log_dir, exist_ok=True)
    # nginx's workers run unprivileged: they read the error pages and buffer request bodies under
    # the checkout, which a private folder (mktemp -d) would hide from them -- unless the PostgreSQL
    # start had opened it already, and with MONGO_URL or a shared PostgreSQL nothing did (403 HTML)
    for path in (values["PROXY_ERRORS_DIR"], values["PROXY_DIR"]):
        _traversable(path)
    for template, target in (("gateway.conf.template", "gateway.conf"), ("nginx.conf.template", "nginx.conf")):
        with open(os.path.join(values["PROXY_DIR"], target), "w") as handle:
            handle.write(_render(template, values))
    conf = os.path.join(values["PROXY_DIR"], "nginx.conf")
    error_log = os.path.join(inst.log_dir, "nginx-error.log")
    argv = [NGINX_BINARY, "-p", values["PROXY_DIR"], "-e", error_log, "-c", conf]
    subprocess.run(argv + ["-t", "-q"], check=True)  # a bad config fails here, with nginx's message
    spawn("nginx", argv, inst.run_dir, inst.log_dir)
    wait_for(lambda: port_open(inst.gateway_port, inst.gateway_host) or not is_running(inst, "nginx"),
             f"nginx on {inst.gateway_port}", timeout=30)
    if not is_running(inst, "nginx"):
        raise RuntimeError(f"nginx exited; see {error_log}")
    return True


def wait_services(inst, services=SERVICES, timeout=60):
    """Wait until each service answers ``ping`` over RPC."""
    import logging
    import warnings
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.getLogger("amqp").setLevel(logging.ERROR)  # "Received method during closing channel" noise
    from nameko.exceptions import RpcTimeout, UnknownService
    from nameko.standalone.rpc import ClusterRpcProxy

    config = {"AMQP_URI": inst.amqp_uri}
    deadline = time.monotonic() + timeout
    with ClusterRpcProxy(config, timeout=2) as cluster:
        for service in services:
            while True:
                try:
                    getattr(cluster, service).ping()
                    break
                except (RpcTimeout, UnknownService):
                    if not is_running(inst, service):
                        raise RuntimeError(f'service {service} exited; see '
                                           f'{os.path.join(inst.log_dir, service + ".log")}') from None
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"service {service} did not answer ping within {timeout}s") from None
                    time.sleep(0.2)


def gateway_healthy(inst):
    try:
        with urllib.request.urlopen(inst.gateway_url + "/healthz", timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def up(inst, quiet=False):
    ensure_rabbitmq(inst)
    ensure_mongo(inst)
    ensure_key(inst)
    declare_topology(inst)
    start_smtp_sink(inst)
    for service in SERVICES:
        start_service(inst, service)
    start_gateway(inst)
    start_proxy(inst)
    wait_services(inst)
    wait_for(lambda: gateway_healthy(inst), f"gateway at {inst.gateway_url}", timeout=60)
    if not quiet:
        print("\norganizations platform is up")
        print(f"  console     {inst.gateway_url}/   (the web console)")
        print(f"  gateway     {inst.gateway_url}/api/v1   (OpenAPI: {inst.gateway_url}/api/v1/openapi.json)")
        print(f"              nginx in front of gunicorn on {inst.upstream_url} (private)")
        print(f"  rabbitmq    {inst.amqp_uri_display}  (management http://{inst.rabbit_host}:{inst.rabbit_mgmt_port})")
        storage = (f"PostgreSQL 127.0.0.1:{inst.postgres_port}, data in var/postgres"
                   if inst.ferretdb_handler == "postgresql" else "SQLite, data in var/ferretdb")
        print(f"  mongodb     {inst.mongo_url}{'' if inst.external_mongo else f'  (FerretDB on {storage})'}")
        print(f"  smtp sink   127.0.0.1:{inst.smtp_port}  (messages in {os.path.relpath(inst.mail_dir, ROOT)})")
        print(f"  logs        {os.path.relpath(inst.log_dir, ROOT)}/*.log")
        print(f"  metrics     {inst.upstream_url}/metrics  (gateway, private port)")
        for service, port in inst.metrics_ports.items():
            if port:
                print(f"              http://127.0.0.1:{port}/metrics  ({service})")


def started_processes(inst):
    """Names of the instance's pid files: the proxy and the gateway first, services, replicas
    (``usage-2``, ...), smtp last."""
    try:
        names = {f[:-4] for f in os.listdir(inst.run_dir) if f.endswith(".pid")} - set(INFRA)
    except FileNotFoundError:
        names = set()
    fixed = ("nginx", "gateway") + SERVICES
    return [n for n in fixed if n in names] + sorted(names - set(fixed) - {"smtp"}) + (
        ["smtp"] if "smtp" in names else [])


def down(inst, infra=True):
    """Stop every process the instance started (also replicas tests or benchmarks added), and with
    ``infra`` the infrastructure a stack started -- nothing that merely answered on its port."""
    for name in started_processes(inst):
        if stop_pid_file(_pid_file(inst, name)):
            print(f"stopped {name}")
    if infra:
        for name in INFRA:
            if stop_infra(name):
                print(f"stopped {name}")


def start_isolated(inst):
    """A fresh test or bench instance: empty vhost, empty databases, empty mail and log folders.

    Returns the infrastructure this call had to start, for :func:`stop_isolated`.
    """
    rabbit_was_up = inst.broker_up()
    mongo_was_up = inst.external_mongo or port_open(inst.mongo_port)
    postgres_was_up = mongo_was_up or inst.ferretdb_handler != "postgresql" or port_open(inst.postgres_port)
    down(inst, infra=False)  # leftovers of an interrupted run
    ensure_rabbitmq(inst)
    reset_vhost(inst)
    ensure_mongo(inst)
    drop_databases(inst)
    if os.path.isdir(inst.mail_dir):
        shutil.rmtree(inst.mail_dir)
    if os.path.isdir(inst.log_dir):  # tests read the logs: only this run's lines count
        shutil.rmtree(inst.log_dir)
    up(inst, quiet=True)
    return [name for name, was_up in (("ferretdb", mongo_was_up), ("postgres", postgres_was_up),
                                      ("rabbitmq", rabbit_was_up)) if not was_up]


def stop_isolated(inst, started_infra, drop=False):
    """Stop the instance and the infrastructure it started -- also when a fault test restarted
    that meanwhile (the pid file then names the new process)."""
    down(inst, infra=False)
    if drop:
        drop_databases(inst)
    for name in started_infra:
        stop_infra(name)


def status(inst):
    rows = [("rabbitmq", inst.broker_up(), inst.amqp_uri_display),
            ("mongodb", port_open(inst.mongo_port) if not inst.external_mongo else None, inst.mongo_url)]
    if not inst.external_mongo and inst.ferretdb_handler == "postgresql":
        rows.append(("postgres", port_open(inst.postgres_port), f"127.0.0.1:{inst.postgres_port} (FerretDB's storage)"))
    for name in ("smtp",) + SERVICES + ("gateway", "nginx"):
        rows.append((name, is_running(inst, name), f"pid {read_pid(_pid_file(inst, name))}"))
    rows.append(("gateway http", gateway_healthy(inst), inst.gateway_url + "/healthz"))
    for name, ok, info in rows:
        state = "unknown" if ok is None else ("up" if ok else "DOWN")
        print(f"{name!s:<14} {state!s:<8} {info}")
    return all(ok is not False for _, ok, _ in rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description="local stack of the organizations platform")
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--instance", default="dev", choices=("dev", "test"))
    args = parser.parse_args(argv)
    inst = Instance(args.instance)
    if args.command == "up":
        up(inst)
    elif args.command == "down":
        down(inst, infra=args.instance == "dev")
    else:
        sys.exit(0 if status(inst) else 1)


if __name__ == "__main__":
    main()
