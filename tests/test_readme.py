"""The README's promises, run for real: its "Try it" curl block works as written against a running
stack, and ``stack.down`` leaves nothing behind of what it started (so the README cannot rot)."""
import glob
import json
import os
import re
import shlex
import subprocess
from urllib.parse import urlsplit

import pytest

from stack import stack
from tests.support import free_port

README = os.path.join(stack.ROOT, "README.md")
README_ORIGIN = "http://127.0.0.1:8080"

# Wraps curl so each call leaves its arguments, response headers, body and exit code in $CALLS;
# its output still goes where the README sends it (a pipe into tee or head, or the terminal).
CURL_RECORDER = r'''
curl() {
  local n
  n=$(( $(cat "$CALLS/count" 2>/dev/null || echo 0) + 1 ))
  echo "$n" > "$CALLS/count"
  printf '%s\0' "$@" > "$CALLS/$n.args"
  command curl -sS -D "$CALLS/$n.head" -o "$CALLS/$n.body" "$@"
  echo "$?" > "$CALLS/$n.rc"
  cat "$CALLS/$n.body"
}
'''


def try_it_block():
    """The shell block under the README's "### Try it" heading."""
    with open(README) as handle:
        text = handle.read()
    match = re.search(r"^### Try it\n.*?^```sh\n(.*?)^```", text, re.S | re.M)
    assert match, "README has no 'Try it' sh block"
    return match.group(1)


def runnable(block, base_url, tmp_path, mail_dir):
    """The block against the test gateway: `make` lines (the stack already runs) are left out, the
    mail reader reads the test instance's SMTP sink; scratch files go to tmp."""
    lines = []
    for line in block.replace("\\\n", " ").splitlines():  # continuation lines joined, as the shell does
        words = shlex.split(line, comments=True) if line.strip() else []
        if not words or "make" in words:
            continue
        line = line.replace(README_ORIGIN, base_url).replace("/tmp/", str(tmp_path) + "/")
        lines.append(line.replace("-m stack.mail", f"-m stack.mail --dir {shlex.quote(mail_dir)}"))
    return "\n".join(lines) + "\n"


def recorded_calls(calls_dir):
    calls = []
    for n in range(1, int(open(os.path.join(calls_dir, "count")).read()) + 1):
        read = lambda suffix, n=n: open(os.path.join(calls_dir, f"{n}.{suffix}"), "rb").read()  # noqa: E731
        args = read("args").decode().split("\0")[:-1]
        status_line = read("head").decode("latin-1").split("\r\n", 1)[0]
        method = next((a[2:] for a in args if a.startswith("-X")), "GET")
        url = next(a for a in args if a.startswith("http"))
        calls.append({"method": method, "url": url, "status": int(status_line.split()[1]),
                      "rc": int(read("rc")), "body": read("body")})
    return calls


def test_the_readme_try_it_block_works_as_written_twice_in_a_row(gateway, test_stack, tmp_path):
    """Run as written, twice (unique addresses each time): sign-up, the organization, an invite
    read from the decoded mail, the invitee's sign-up, accept and switch."""
    block = try_it_block()
    assert README_ORIGIN + "/api/v1" in block  # the origin the substitution below relies on
    for run in (1, 2):
        check_one_run(gateway, test_stack, tmp_path / (f"run{run}"), block)


def check_one_run(gateway, test_stack, tmp_path, block):
    calls_dir = tmp_path / "calls"
    calls_dir.mkdir(parents=True)
    script = "set -e\n" + CURL_RECORDER + runnable(block, gateway.base_url, tmp_path, test_stack.mail_dir)
    result = subprocess.run(["bash", "-c", script], env=dict(os.environ, CALLS=str(calls_dir)), cwd=stack.ROOT,
                            capture_output=True, timeout=180)
    assert result.returncode == 0, (result.stdout, result.stderr)

    calls = recorded_calls(str(calls_dir))
    for call in calls:
        assert call["rc"] == 0 and 200 <= call["status"] < 300, call
    signup = json.loads(calls[0]["body"])
    org_id, user = signup["organization"]["id"], signup["user"]
    grace = json.loads(calls[6]["body"])
    hopper = grace["organization"]["id"]
    api = urlsplit(gateway.api).path
    steps = [(c["method"], re.sub(r"/invites/[A-Za-z0-9_-]{20,}", "/invites/{token}",
                                  urlsplit(c["url"]).path.replace(org_id, "{id}"))) for c in calls]
    assert steps == [("POST", api + "/auth/signup"), ("GET", api + "/me"), ("GET", api + "/organizations/{id}"),
                     ("PATCH", api + "/organizations/{id}"), ("POST", api + "/organizations/{id}/invites"),
                     ("GET", api + "/invites/{token}"), ("POST", api + "/auth/signup"),
                     ("POST", api + "/invites/{token}/accept"), ("POST", api + "/auth/switch"),
                     ("GET", api + "/openapi.json"), ("GET", api + "/organizations/{id}/audit-log")], steps

    # the flow: signup -> token -> me -> organization -> rename, each answer the one written about
    assert calls[0]["status"] == 201 and signup["access_token"]
    me = json.loads(calls[1]["body"])
    assert me["user"]["id"] == user["id"] and me["organization"]["id"] == org_id and me["is_owner"] is True
    assert json.loads(calls[2]["body"])["name"] == "Lovelace Lab"
    assert json.loads(calls[3]["body"])["name"] == "Ada Lab"
    assert gateway.get(f"/organizations/{org_id}", signup["access_token"]).json()["name"] == "Ada Lab"
    invited = json.loads(calls[4]["body"])["items"][0]["email"]
    assert calls[4]["status"] == 201 and invited.startswith("grace.") and invited == grace["user"]["email"]
    assert "Subject: " in result.stdout.decode() and "/invites/" in result.stdout.decode()  # the mail, decoded
    preview = json.loads(calls[5]["body"])
    assert preview["organization"] == {"id": org_id, "name": "Ada Lab"} and preview["role"] == "dataset_manager"
    joined = json.loads(calls[7]["body"])
    assert joined["organization"]["id"] == org_id and joined["organization"]["role"] == "dataset_manager"
    switched = json.loads(calls[8]["body"])
    assert switched["organization"]["id"] == hopper and switched["organization"]["is_owner"] is True
    mine = {o["id"] for o in gateway.get("/me", switched["access_token"]).json()["organizations"]}
    assert mine == {org_id, hopper}
    assert calls[9]["body"].startswith(b'{') and b'"openapi"' in calls[9]["body"]
    assert isinstance(json.loads(calls[10]["body"])["items"], list)  # the audit log (written as events arrive)


def test_the_configuration_section_names_every_setting():
    """Every ``${VAR:default}`` of a config.yml and every variable the code reads from the
    environment is documented (the contract asks for every env var)."""
    with open(README) as handle:
        text = handle.read()
    section = text[text.index("## Configuration"):text.index("\n## ", text.index("## Configuration") + 1)]
    read = {}
    for pattern, glob_patterns in (
            (r"\$\{([A-Z][A-Z0-9_]*)", ("services/*/config.yml", "gateway/config.yml", "stack/nginx/proxy.yml")),
            (r"(?:environ\.get|environ\.setdefault|getenv|env_int|setting)\(\s*\"([A-Z][A-Z0-9_]*)\"",
             ("services/*/*.py", "common/*.py", "gateway/*.py", "gateway/routes/*.py", "stack/*.py", "bench/*.py",
              "soak/*.py", "tests/*.py", "faults/*.py"))):
        for glob_pattern in glob_patterns:
            for path in glob.glob(os.path.join(stack.ROOT, glob_pattern)):
                with open(path) as handle:
                    for name in re.findall(pattern, handle.read()):
                        read.setdefault(name, os.path.relpath(path, stack.ROOT))
    # the user's home for rabbitmq; WSGI environ keys (gateway/accesslog.py, gateway/wsgi.py: CGI
    # variables and HTTP_* request headers), not settings
    not_settings = {"HOME", "RAW_URI", "REMOTE_ADDR", "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING",
                    "SERVER_PROTOCOL"}
    missing = {name: path for name, path in read.items()
               if name not in not_settings and not name.startswith("HTTP_") and f"`{name}`" not in section}
    assert not missing, f"undocumented in README's Configuration: {missing!r}"
    assert len(read) > 60  # the patterns above still find the settings


# -- `make down` leaves nothing behind ---------------------------------------------------------------

def group_members(pgid):
    """Live (not zombie) processes of the process group ``pgid``, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # not a process, or gone meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def listening_ports():
    """TCP ports something listens on (IPv4 and IPv6), from /proc."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for row in handle.readlines()[1:]:
                local, state = row.split()[1], row.split()[3]
                if state == "0A":
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


@pytest.fixture
def spare_instance(test_stack, monkeypatch):
    """A second instance of the stack of our own (own name, vhost, databases, free ports)."""
    name = test_stack.name + "-down"
    monkeypatch.setenv("TEST_INSTANCE", name)
    monkeypatch.setenv("TEST_GATEWAY_PORT", str(free_port()))
    monkeypatch.setenv("TEST_GATEWAY_UPSTREAM_PORT", str(free_port()))
    monkeypatch.setenv("TEST_SMTP_PORT", str(free_port()))
    monkeypatch.delenv("TEST_RABBIT_VHOST", raising=False)
    monkeypatch.delenv("TEST_MONGO_DB_PREFIX", raising=False)
    inst = stack.Instance("test")
    assert inst.vhost != test_stack.vhost and inst.db_prefix != test_stack.db_prefix
    started_infra = stack.start_isolated(inst)
    try:
        yield inst
    finally:
        stack.stop_isolated(inst, started_infra, drop=True)
        stack._management(inst, "DELETE", f'/api/vhosts/{stack.urllib.request.quote(inst.vhost, safe="")}')


@pytest.mark.slow
def test_down_stops_every_process_it_started_and_frees_its_ports(spare_instance):
    inst = spare_instance
    stack.start_replica(inst, "org", "org-2")  # one more process, as tests and benchmarks add them
    groups = {name: stack.read_pid(os.path.join(inst.run_dir, name + ".pid")) for name in stack.started_processes(inst)}
    assert set(groups) == {"nginx", "gateway", "org", "membership", "notifications", "usage", "audit", "org-2",
                           "smtp"}
    assert all(groups.values()), groups
    assert {inst.gateway_port, inst.upstream_port, inst.smtp_port} <= listening_ports()
    # gunicorn's and nginx's workers share their master's process group: the check below covers them
    assert len(group_members(groups["gateway"])) > 1 and len(group_members(groups["nginx"])) > 1

    stack.down(inst, infra=False)

    alive = {name: group_members(pgid) for name, pgid in groups.items() if group_members(pgid)}
    assert not alive, f"process groups still alive after down: {alive!r}"
    assert not {inst.gateway_port, inst.upstream_port, inst.smtp_port} & listening_ports()
    assert not [f for f in os.listdir(inst.run_dir) if f.endswith(".pid")]


def test_epmd_is_stopped_only_with_a_rabbitmq_that_started_it(tmp_path, monkeypatch):
    """`down` must stop what a stack started and nothing else: an epmd that ran before our rabbitmq
    (another Erlang node's) survives; one our rabbitmq started goes with it."""
    monkeypatch.setattr(stack, "INFRA_RUN", str(tmp_path))
    monkeypatch.setattr(stack, "EPMD_MARKER", str(tmp_path / "epmd.started"))
    killed = []
    monkeypatch.setattr(stack, "stop_epmd", lambda: killed.append(True))

    def fake_rabbitmq():
        """A process standing in for rabbitmq-server, with the pid file a stack writes for it."""
        return stack.spawn("rabbitmq", ["sleep", "600"], str(tmp_path), str(tmp_path))

    inst = stack.Instance("dev")
    inst.run_dir = str(tmp_path / "instance")  # an instance with nothing running of its own

    pid = fake_rabbitmq()
    stack.down(inst)
    assert not group_members(pid) and not os.path.exists(tmp_path / "rabbitmq.pid")
    assert killed == []  # epmd was already running when rabbitmq started: not ours

    pid = fake_rabbitmq()
    (tmp_path / "epmd.started").write_text("started with rabbitmq\n")
    stack.down(inst)
    assert not group_members(pid)
    assert killed == [True] and not (tmp_path / "epmd.started").exists()

    (tmp_path / "epmd.started").write_text("started with rabbitmq\n")
    stack.down(inst)  # no rabbitmq of ours running (someone else's answers on the port): nothing to stop
    assert killed == [True]
