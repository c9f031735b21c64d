"""Clients generated from the served OpenAPI document work against the real stack (issue 16).

`make clients` installs the pinned tools (.venv/clients: openapi-python-client in an environment
of its own, openapi-generator's CLI jar from Maven Central, @redocly/cli from npm) and runs this
module; plain `make test` does not collect it (tests/conftest.py). Each generator's output is used as generated: a
journey script
imports it and drives sign-up without an organization (and its idempotent replay), /me, login,
organization creation, switch, refresh, an invite, a 429 with Retry-After, DELETE /me, and an
organization deletion whose 202 Location is followed to completion.
"""
import json
import os
import subprocess

import pytest

TOOLS = os.environ.get("CLIENT_TOOLS")
HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 600  # a JVM start and generation on a busy 2-core machine


def run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, **kwargs)
    assert result.returncode == 0, (f"{command}\n--- stdout\n{result.stdout[-5000:]}\n--- "
                                    f"stderr\n{result.stderr[-5000:]}")
    return result


@pytest.fixture(scope="module")
def spec_file(gateway, tmp_path_factory):
    response = gateway.get("/openapi.json")
    assert response.status_code == 200
    path = tmp_path_factory.mktemp("openapi") / "openapi.json"
    path.write_text(json.dumps(response.json(), indent=1))
    return path


def tool_env():
    venv_bin = os.path.join(TOOLS, "venv", "bin")
    return dict(os.environ, PATH=venv_bin + os.pathsep + os.environ.get("PATH", ""))


def journey(script, folder, package, gateway):
    result = run([os.path.join(TOOLS, "venv", "bin", "python"), os.path.join(HERE, script), str(folder), package,
                  gateway.base_url], env=tool_env())
    print(result.stdout)
    assert "journey complete" in result.stdout


def test_redocly_lint_recommended_finds_no_error(spec_file):
    result = subprocess.run([os.path.join(TOOLS, "node", "node_modules", ".bin", "redocly"), "lint",
                             "--config", os.path.join(HERE, "redocly.yaml"), "--format", "stylish", str(spec_file)],
                            capture_output=True, text=True, timeout=TIMEOUT)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and " error " not in output, output


def test_openapi_python_client_journey(spec_file, gateway, tmp_path):
    run([os.path.join(TOOLS, "venv", "bin", "openapi-python-client"), "generate", "--path", str(spec_file),
         "--output-path", str(tmp_path / "orgplatform_opc"), "--meta", "none"], env=tool_env())
    journey("journey_openapi_python_client.py", tmp_path, "orgplatform_opc", gateway)


def test_openapi_generator_python_journey(spec_file, gateway, tmp_path):
    run(["java", "-jar", os.environ["OPENAPI_GENERATOR_JAR"], "generate", "-i", str(spec_file), "-g", "python",
         "-o", str(tmp_path / "generated"), "--additional-properties=packageName=orgplatform_oag"])
    journey("journey_openapi_generator.py", tmp_path / "generated", "orgplatform_oag", gateway)
