"""Servers and a browser for the UI tests: JupyterLab (the quickstart) and Voila (the app) on 127.0.0.1, Debian's
Chromium."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = ROOT / "artifacts" / "ui"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


def copy_notebooks(tmp_path_factory, name: str) -> Path:
    """A fresh copy of the notebooks per server: JupyterLab autosaves what the test types."""
    path = tmp_path_factory.mktemp(name) / "notebooks"
    shutil.copytree(ROOT / "notebooks", path)
    return path


def _start(args: list[str], cwd: Path, env_extra: dict, log: Path) -> subprocess.Popen:
    env = {**os.environ, **env_extra}
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


@pytest.fixture(scope="session")
def lab_url(tmp_path_factory):
    workdir = copy_notebooks(tmp_path_factory, "lab")
    port = free_port()
    settings = tmp_path_factory.mktemp("lab-settings")
    # No news pop-up over the screenshots.
    notification = settings / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    server = _start(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.token=", "--ServerApp.password=", "--ServerApp.allow_root=True",
         "--LabApp.expose_app_in_browser=True", f"--ServerApp.root_dir={workdir}"],
        # A workspace of its own: a layout saved by an earlier run (a wide file browser) would squeeze the panel.
        workdir, {"JUPYTERLAB_SETTINGS_DIR": str(settings),
                  "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path_factory.mktemp("lab-workspaces"))}, workdir.parent / "lab.log",
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/lab", server)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(20)


@pytest.fixture(scope="session")
def voila_url(tmp_path_factory):
    workdir = copy_notebooks(tmp_path_factory, "voila")
    port = free_port()
    server = _start(
        [sys.executable, "-m", "voila", "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
         "app.ipynb"],
        workdir, {}, workdir.parent / "voila.log",
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", server, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(20)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install -y chromium (scripts/setup.sh test does it)")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield instance
        instance.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1900, "height": 1100}, accept_downloads=True)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
