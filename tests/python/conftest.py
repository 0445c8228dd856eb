"""Starts the real swarmgate binary for the external-client suite."""

import os
import socket
import subprocess
import tempfile
import time

import pytest
import requests

ADMIN_PASSWORD = "Adm1n!Python-Suite"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def swarmgate():
    binary = os.environ.get("SWARMGATE_BIN", "target/debug/swarmgate")
    if not os.path.exists(binary):
        pytest.fail(f"swarmgate binary not found at {binary}; run cargo build first")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "SWARMGATE_LISTEN": f"127.0.0.1:{port}",
            "DATABASE_URL": f"sqlite://{tmp}/swarmgate.db",
            "SWARMGATE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        }
        log = open(os.path.join(tmp, "stderr.log"), "w")
        proc = subprocess.Popen([binary, "serve"], env=env, stderr=log, stdout=subprocess.DEVNULL)
        try:
            for _ in range(200):
                try:
                    if requests.get(f"{base}/health", timeout=1).ok:
                        break
                except requests.ConnectionError:
                    pass
                time.sleep(0.05)
            else:
                pytest.fail("swarmgate did not start")
            yield base
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            log.close()
