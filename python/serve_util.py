"""Start and stop a real `chimera serve` on a free loopback port (for the server tests and the
load script). The server is asked for port 0 and prints the port it got, so parallel test runs
never race for a port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import requests

LISTEN_RE = re.compile(r"listening on http://([0-9.]+):(\d+)")


class ServeProcess:
    def __init__(self, binary: str | os.PathLike[str], *args: str, timeout: float = 60):
        self.log = tempfile.NamedTemporaryFile(prefix="chimera-serve-", suffix=".log", delete=False)
        self.args = [str(binary), "serve", "--port", "0", *map(str, args)]
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chimera serve exited {self.proc.returncode}:\n{self.output()}")
            m = LISTEN_RE.search(self.output())
            if m:
                self.url = f"http://{m.group(1)}:{m.group(2)}"
                break
            time.sleep(0.05)
        else:
            self.kill()
            raise RuntimeError(f"chimera serve did not start:\n{self.output()}")
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"chimera serve never answered /health:\n{self.output()}")

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def metrics(self) -> dict[str, float]:
        """The /metrics samples as {name (with labels): value}."""
        text = requests.get(self.url + "/metrics", timeout=10).text
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"chimera serve did not stop on signal {sig}")
        self.log.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "ServeProcess":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        code = self.stop()
        output = self.output()
        os.unlink(self.log.name)
        # A server that crashed or failed to stop cleanly fails the test that used it.
        if code != 0 and exc_type is None:
            raise AssertionError(f"chimera serve exited {code}:\n{output[-4000:]}")
