"""Starts the real swarmgate binary for the external-client suite."""

import os
import secrets
import socket
import subprocess
import tempfile
import time
import urllib.parse

import pytest
import requests

ADMIN_PASSWORD = "Adm1n!Python-Suite"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MODEL = "phi-3.5-mini"
# Served by the mock's Anthropic Messages API, behind the [anthropic] profile.
CLAUDE_MODEL = "claude-mock"
# The provider key only the gateway holds; the mock refuses any other.
PROVIDER_KEY = "sk-ant-held-by-the-gateway"


def _binary():
    binary = os.environ.get("SWARMGATE_BIN", "target/debug/swarmgate")
    if not os.path.exists(binary):
        pytest.fail(f"swarmgate binary not found at {binary}; run cargo build first")
    return binary


def _wait(url):
    for _ in range(200):
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.05)
    pytest.fail(f"{url} did not come up")


def _backends(tmp):
    """Where the server keeps its data: a fresh SQLite file in `tmp`; with
    SWARMGATE_TEST_PY_BACKENDS=services, a fresh PostgreSQL database on the
    server TEST_DATABASE_URL names (`.ci/run` drops every `sg_test_*`
    database at the end) and a fresh namespace on TEST_REDIS_URL."""
    if os.environ.get("SWARMGATE_TEST_PY_BACKENDS") != "services":
        return {"DATABASE_URL": f"sqlite://{tmp}/swarmgate.db"}
    admin_url = os.environ.get("TEST_DATABASE_URL")
    redis_url = os.environ.get("TEST_REDIS_URL")
    if not admin_url or not redis_url:
        pytest.fail("SWARMGATE_TEST_PY_BACKENDS=services needs TEST_DATABASE_URL and TEST_REDIS_URL")
    name = f"sg_test_py_{secrets.token_hex(6)}"
    subprocess.run(["psql", admin_url, "-qc", f'CREATE DATABASE "{name}"'], check=True)
    database_url = urllib.parse.urlparse(admin_url)._replace(path=f"/{name}").geturl()
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SWARMGATE_REDIS__NAMESPACE": name,
    }


@pytest.fixture(scope="session")
def swarmgate():
    """swarmgate on fresh storage (see `_backends`), with one model served
    by a real `swarmgate mock-upstream` process."""
    binary = _binary()
    port, mock_port = _free_port(), _free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "swarmgate.toml")
        with open(config, "w") as f:
            f.write(
                f'[[models]]\nname = "{MODEL}"\nupstreams = ["http://127.0.0.1:{mock_port}"]\n'
            )
        env = {
            "PATH": os.environ.get("PATH", ""),
            "SWARMGATE_LISTEN": f"127.0.0.1:{port}",
            **_backends(tmp),
            "SWARMGATE_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "SWARMGATE_CONFIG": config,
            "ANTHROPIC_API_KEY": PROVIDER_KEY,
            # Every module logs in as admin, and test_bad_input.py sends
            # malformed logins and registrations by the hundred; the
            # defaults (a few a minute or an hour) are for attackers.
            "SWARMGATE_SECURITY__LOGIN_RATE_PER_MINUTE": "100000",
            "SWARMGATE_SECURITY__REGISTER_RATE_PER_HOUR": "100000",
            "CLAUDE_BASE_URL": f"http://127.0.0.1:{mock_port}",
        }
        log = open(os.path.join(tmp, "stderr.log"), "w")
        mock = subprocess.Popen(
            [binary, "mock-upstream", "--listen", f"127.0.0.1:{mock_port}",
             "--models", f"{MODEL},{CLAUDE_MODEL}", "--anthropic-key", PROVIDER_KEY],
            env={"PATH": env["PATH"]}, stderr=log, stdout=subprocess.DEVNULL,
        )
        proc = subprocess.Popen([binary, "serve"], env=env, stderr=log, stdout=subprocess.DEVNULL)
        try:
            _wait(f"http://127.0.0.1:{mock_port}/v1/models")
            _wait(f"{base}/health")
            yield base
        finally:
            for p in (proc, mock):
                p.terminate()
                p.wait(timeout=10)
            log.close()
