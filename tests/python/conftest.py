"""Shared pytest fixtures: where the `chimera` binary is (CHIMERA_BIN) and how to run it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def chimera_bin() -> Path:
    """The chimera binary under test: $CHIMERA_BIN, else build/bin/chimera. Missing is an error."""
    path = Path(os.environ.get("CHIMERA_BIN", REPO_ROOT / "build" / "bin" / "chimera"))
    if not path.is_file() or not os.access(path, os.X_OK):
        raise FileNotFoundError(
            f"chimera binary not found at {path}; build it and set CHIMERA_BIN=/path/to/chimera")
    return path


class Chimera:
    def __init__(self, binary: Path):
        self.binary = binary

    def run(self, *args: str | os.PathLike[str], check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(self.binary), *map(str, args)], capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"chimera {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def json(self, *args: str | os.PathLike[str]) -> object:
        return json.loads(self.run(*args).stdout)


@pytest.fixture(scope="session")
def chimera(chimera_bin: Path) -> Chimera:
    return Chimera(chimera_bin)
