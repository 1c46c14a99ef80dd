"""Headless Chromium driven through chromedriver's W3C WebDriver protocol (plain JSON over HTTP).

Debian's ``chromium`` and ``chromium-driver`` packages provide both binaries; ``.ci/run`` installs them.
The protocol needs only a handful of calls here — open a page, run a script in it, take a screenshot —
so this speaks it directly rather than pulling in a client library.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Browser:
    """One headless Chromium session. Use as a context manager."""

    def __init__(self, *, width: int = 1400, height: int = 1700) -> None:
        if CHROMIUM is None or CHROMEDRIVER is None:
            raise RuntimeError("needs chromium and chromedriver (apt-get install chromium chromium-driver)")
        self._port = _free_port()
        self._driver = subprocess.Popen(
            [CHROMEDRIVER, f"--port={self._port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._base = f"http://127.0.0.1:{self._port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                self._call("GET", "/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    self._driver.kill()
                    raise
                time.sleep(0.05)
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}"]  # fmt: skip
        capabilities = {"alwaysMatch": {"goog:chromeOptions": {"binary": CHROMIUM, "args": args}}}
        session = self._call("POST", "/session", {"capabilities": capabilities})
        self._session = f"/session/{session['sessionId']}"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self._base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["value"]

    def get(self, url: str) -> None:
        self._call("POST", f"{self._session}/url", {"url": url})

    def run(self, script: str, *args: Any) -> Any:
        """Run ``script`` (a function body; ``arguments`` holds ``args``) in the page; its return value."""
        return self._call("POST", f"{self._session}/execute/sync", {"script": script, "args": list(args)})

    def wait_for(self, script: str, *, timeout: float = 20.0) -> Any:
        """Run ``script`` until it returns something truthy; that value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.run(script)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"the page never satisfied: {script}")
            time.sleep(0.05)

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self._call("GET", f"{self._session}/screenshot")))

    def close(self) -> None:
        try:
            self._call("DELETE", self._session)
        finally:
            self._driver.terminate()
            self._driver.wait(10)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
