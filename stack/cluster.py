"""A 3-node RabbitMQ cluster on this machine, for the cluster fault test (`make faults`).

Everything is private to the cluster and stays apart from the shared single broker the stack
starts (``orgplatform@localhost`` on 5672/15672/25672, the default epmd on 4369): node names
``orgplatform-<n>@localhost``, their own AMQP, management and distribution ports, data and logs
under ``var/cluster/``, an epmd of its own on its own port, one Erlang cookie shared by the three
(in the cluster's own ``HOME``), loopback only. Every process it starts has a pid file there;
:meth:`Cluster.stop` stops exactly those (see shared/notes/rabbitmq-cluster.md for the recipe and
its measured costs: first boot 10-13 s, join 13-15 s, restart under load 16-20 s).

Only the standard library is imported, like ``stack.stack``.
"""
import os
import secrets
import shutil
import signal
import subprocess
import time

from stack.stack import RABBIT_HOME, ROOT, install_rabbitmq, port_open, read_pid, spawn, stop_pid_file, wait_for

NAMES = ("a", "b", "c")


class Cluster:
    """Ports and folders of the cluster; ``FAULTS_PORT_BASE`` moves all its ports at once."""

    def __init__(self, base_dir=None, port_base=None):
        self.base = base_dir or os.path.join(ROOT, "var", "cluster")
        port_base = int(port_base or os.environ.get("FAULTS_PORT_BASE") or 5780)
        self.amqp_ports = {name: port_base + 1 + i for i, name in enumerate(NAMES)}
        self.management_ports = {name: 10000 + port_base + 1 + i for i, name in enumerate(NAMES)}
        self.dist_ports = {name: 20000 + port_base + 1 + i for i, name in enumerate(NAMES)}
        self.epmd_port = port_base - 1381 if port_base > 1381 else 4399  # 5780 -> 4399
        self.cli_ports = (20000 + port_base + 10, 20000 + port_base + 19)
        self.home = os.path.join(self.base, "home")
        self.run_dir = os.path.join(self.base, "run")
        self.log_dir = os.path.join(self.base, "log")
        self.admin = ("orgplatform-cluster", None)

    def node(self, name):
        return f"orgplatform-{name}@localhost"

    # -- environment ---------------------------------------------------------------------------

    def _common_env(self):
        env = dict(os.environ)
        for key in [k for k in env if k.startswith("RABBITMQ_")]:
            del env[key]
        env.update({
            "HOME": self.home, "ERL_EPMD_PORT": str(self.epmd_port), "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_CTL_DIST_PORT_MIN": str(self.cli_ports[0]), "RABBITMQ_CTL_DIST_PORT_MAX": str(self.cli_ports[1]),
            "RABBITMQ_CONF_ENV_FILE": os.path.join(self.base, "rabbitmq-env.conf"),  # empty: not the system's
        })
        return env

    def node_env(self, name):
        folder = os.path.join(self.base, name)
        env = self._common_env()
        env.update({
            "RABBITMQ_NODENAME": self.node(name), "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_ports[name]), "RABBITMQ_DIST_PORT": str(self.dist_ports[name]),
            "RABBITMQ_MNESIA_BASE": os.path.join(folder, "mnesia"), "RABBITMQ_LOG_BASE": os.path.join(folder, "log"),
            "RABBITMQ_PID_FILE": os.path.join(folder, "rabbit.pid"),
            "RABBITMQ_CONFIG_FILE": os.path.join(folder, "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(folder, "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(folder, "enabled_plugins"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        })
        return env

    def ctl(self, name, *args, timeout=180):
        """``rabbitmqctl -n <node> ...`` with the cluster's cookie and epmd."""
        return subprocess.run([os.path.join(RABBIT_HOME, "rabbitmqctl"), "-n", self.node(name)] + list(args),
                              env=self.node_env(name), check=True, capture_output=True, text=True, timeout=timeout)

    # -- life cycle ----------------------------------------------------------------------------

    def _prepare(self):
        for folder in (self.home, self.run_dir, self.log_dir):
            os.makedirs(folder, exist_ok=True)
        cookie = os.path.join(self.home, ".erlang.cookie")
        if not os.path.exists(cookie):
            fd = os.open(cookie, os.O_WRONLY | os.O_CREAT, 0o400)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(20))
        open(os.path.join(self.base, "rabbitmq-env.conf"), "w").close()
        password_file = os.path.join(self.base, "admin.password")
        if not os.path.exists(password_file):
            with open(os.open(password_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
                handle.write(secrets.token_hex(16))
        with open(password_file) as handle:
            self.admin = (self.admin[0], handle.read().strip())
        for name in NAMES:
            folder = os.path.join(self.base, name)
            os.makedirs(os.path.join(folder, "log"), exist_ok=True)
            with open(os.path.join(folder, "enabled_plugins"), "w") as handle:
                handle.write("[rabbitmq_management].\n")
            open(os.path.join(folder, "advanced.config"), "w").write("[].\n")
            with open(os.open(os.path.join(folder, "rabbitmq.conf"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
                      "w") as handle:
                handle.write("\n".join([
                    f"listeners.tcp.1 = 127.0.0.1:{self.amqp_ports[name]}",
                    "management.tcp.ip = 127.0.0.1", f"management.tcp.port = {self.management_ports[name]}",
                    f"default_user = {self.admin[0]}", f"default_pass = {self.admin[1]}",
                    "default_user_tags.administrator = true",
                    "default_permissions.configure = .*", "default_permissions.read = .*",
                    "default_permissions.write = .*",
                    "log.file.level = info", "log.console = false", ""]))

    def start_epmd(self):
        if port_open(self.epmd_port):
            return
        spawn("epmd", ["epmd", "-port", str(self.epmd_port)], self.run_dir, self.log_dir,
              env=dict(self._common_env()))
        wait_for(lambda: port_open(self.epmd_port), f"epmd on {self.epmd_port}", timeout=30)

    def start_node(self, name, timeout=180):
        """Start one node and wait until it runs its applications (pid file: ``run/<name>.pid``)."""
        pid = spawn(name, [os.path.join(RABBIT_HOME, "rabbitmq-server")], self.run_dir, self.log_dir,
                    env=self.node_env(name))
        pid_file = os.path.join(self.base, name, "rabbit.pid")
        # `wait` (not await_startup): right after spawning, the node is not in epmd yet
        wait_for(lambda: os.path.exists(pid_file) or read_pid(os.path.join(self.run_dir, name + ".pid")) is None,
                 f"{name}'s pid file", timeout=60)
        if read_pid(os.path.join(self.run_dir, name + ".pid")) is None:
            raise RuntimeError(f'node {name} exited; see {os.path.join(self.log_dir, name + ".log")}')
        self.ctl(name, "wait", pid_file, "--timeout", str(timeout), timeout=timeout + 30)
        return pid

    def start(self):
        """A fresh cluster: epmd, node a, then b and c joined to a. Returns once all three run.

        Data of an earlier run is removed first (nodes stopped together wait for each other's
        tables when they start again: a test wants a cluster in a known state instead)."""
        if any(read_pid(os.path.join(self.run_dir, name + ".pid")) for name in NAMES):
            raise RuntimeError(f"a cluster from an earlier run still runs (pid files in {self.run_dir})")
        for name in NAMES:
            shutil.rmtree(os.path.join(self.base, name), ignore_errors=True)
        install_rabbitmq()
        self._prepare()
        self.start_epmd()
        for name in NAMES:
            self.start_node(name)
            if name != NAMES[0]:
                self.ctl(name, "stop_app")
                self.ctl(name, "join_cluster", self.node(NAMES[0]))
                self.ctl(name, "start_app")
                self.ctl(name, "await_startup", "--timeout", "180", timeout=210)
        wait_for(lambda: len(self.running_nodes()) == len(NAMES), "all nodes running", timeout=60, interval=0.5)

    def running_nodes(self):
        try:
            output = self.ctl(self._some_up(), "eval", "rabbit_nodes:all_running().", timeout=30).stdout
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, RuntimeError):
            return []
        return [name for name in NAMES if self.node(name) in output]

    def _some_up(self):
        for name in NAMES:
            if port_open(self.amqp_ports[name]):
                return name
        raise RuntimeError("no node of the cluster is up")

    def kill(self, name):
        """SIGKILL the node's VM: no goodbye to its peers or clients, like a lost machine."""
        os.killpg(read_pid(os.path.join(self.run_dir, name + ".pid")), signal.SIGKILL)
        wait_for(lambda: not port_open(self.amqp_ports[name]), f"node {name} to be gone", timeout=30)

    def restart(self, name):
        stale = os.path.join(self.base, name, "rabbit.pid")  # the killed VM's, else `wait` takes it
        if os.path.exists(stale):
            os.unlink(stale)
        return self.start_node(name)

    def stop(self):
        """Stop every node and the epmd this cluster started (by pid file), nothing else."""
        for name in NAMES:  # all at once: a node stopping alone waits on its peers
            pid = read_pid(os.path.join(self.run_dir, name + ".pid"))
            if pid:
                try:
                    os.killpg(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        stopped = []
        for name in NAMES + ("epmd",):
            if stop_pid_file(os.path.join(self.run_dir, name + ".pid"), timeout=30):
                stopped.append(name)
        return stopped

    # -- for the stack -------------------------------------------------------------------------

    def stack_environment(self):
        """What ``stack.Instance`` needs to run against this cluster (every node in AMQP_URI)."""
        return {"RABBIT_HOST": "127.0.0.1",
                "RABBIT_PORTS": ",".join(str(self.amqp_ports[n]) for n in NAMES),
                "RABBIT_MANAGEMENT_PORTS": ",".join(str(self.management_ports[n]) for n in NAMES),
                "RABBIT_USER": self.admin[0], "RABBIT_PASSWORD": self.admin[1]}

    def name_of(self, node):
        """``a`` of ``orgplatform-a@localhost``."""
        return node.split("@")[0].rsplit("-", 1)[1]


def elapsed(since):
    return time.monotonic() - since
