"""`chimera run -f FILE`, and `cmake --install` laying out a chimera that finds its default model."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = REPO_ROOT / "models" / "default.gguf"
GEN = ["-n", "4", "--temp", "0", "-q"]


def test_prompt_from_file_equals_prompt_from_flag(chimera, tmp_path: Path) -> None:
    prompt = "And God said"
    f = tmp_path / "prompt.txt"
    f.write_text(prompt + "\n")  # the trailing newline an editor adds is dropped
    from_flag = chimera.run("run", "-m", MODEL, "-p", prompt, *GEN).stdout
    from_file = chimera.run("run", "-m", MODEL, "-f", f, *GEN).stdout
    assert from_file == from_flag
    assert from_file.startswith(prompt) and len(from_file) > len(prompt) + 1


def test_prompt_from_stdin(chimera_bin: Path) -> None:
    proc = subprocess.run([str(chimera_bin), "run", "-m", str(MODEL), "-f", "-", *GEN],
                          input="In the beginning\n", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("In the beginning")


@pytest.mark.parametrize("kind", ["missing", "directory", "unreadable", "empty"])
def test_bad_prompt_file_is_a_clear_error(chimera, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "prompt.txt"
    expected = {"missing": "No such file or directory", "directory": "is a directory",
                "unreadable": "Permission denied", "empty": "is empty"}[kind]
    if kind == "directory":
        path.mkdir()
    elif kind == "unreadable":
        if os.geteuid() == 0:  # root reads anything: a path through a file fails instead
            path.write_text("x")
            path = path / "prompt.txt"
            expected = "Not a directory"
        else:
            path.write_text("x")
            path.chmod(0)
    elif kind == "empty":
        path.write_text("\n")
    proc = chimera.run("run", "-m", MODEL, "-f", path, "-n", "1", check=False)
    assert proc.returncode == 1
    assert str(path) in proc.stderr and expected in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_prompt_is_required_and_exclusive(chimera, tmp_path: Path) -> None:
    proc = chimera.run("run", "-m", MODEL, "-n", "1", check=False)
    assert proc.returncode == 2 and "-p TEXT or -f FILE" in proc.stderr
    f = tmp_path / "p.txt"
    f.write_text("x")
    proc = chimera.run("run", "-m", MODEL, "-p", "x", "-f", f, "-n", "1", check=False)
    assert proc.returncode != 0 and "excludes" in proc.stderr


def test_default_model_from_the_build_tree(chimera, tmp_path: Path) -> None:
    with_m = chimera.run("run", "-m", MODEL, "-p", "And God said", *GEN).stdout
    proc = subprocess.run([str(chimera.binary), "run", "-p", "And God said", "-n", "4", "--temp", "0"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={k: v for k, v in os.environ.items() if k != "CHIMERA_MODEL"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == with_m
    assert f"loaded {MODEL}" in proc.stderr


def test_missing_default_model_names_where_it_looked(chimera, tmp_path: Path) -> None:
    env = dict(os.environ, CHIMERA_MODEL=str(tmp_path / "none.gguf"))
    proc = subprocess.run([str(chimera.binary), "run", "-p", "x", "-n", "1"], capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 1
    assert "CHIMERA_MODEL" in proc.stderr and "none.gguf" in proc.stderr


def test_cmake_install_finds_the_default_model(chimera, tmp_path: Path) -> None:
    build_dir = chimera.binary.resolve().parent.parent
    if not (build_dir / "cmake_install.cmake").is_file():
        raise AssertionError(f"{chimera.binary} is not in a CMake build folder ({build_dir})")
    prefix = tmp_path / "prefix"
    subprocess.run(["cmake", "--install", str(build_dir), "--prefix", str(prefix)], check=True,
                   capture_output=True, timeout=120)
    installed = prefix / "bin" / "chimera"
    model = prefix / "share" / "chimera" / "models" / "default.gguf"
    assert installed.is_file() and os.access(installed, os.X_OK)
    assert model.read_bytes() == MODEL.read_bytes()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CHIMERA_MODEL"}
    proc = subprocess.run([str(installed), "run", "-p", "And God said", "-n", "4", "--temp", "0"],
                          capture_output=True, text=True, timeout=120, cwd=elsewhere, env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"loaded {model}" in proc.stderr  # the installed copy, not the source tree's
    assert proc.stdout == chimera.run("run", "-m", MODEL, "-p", "And God said", *GEN).stdout
    # Moved elsewhere with its share/ folder, it still finds the model (paths are relative).
    moved = tmp_path / "moved"
    shutil.copytree(prefix, moved)
    shutil.rmtree(prefix)
    proc = subprocess.run([str(moved / "bin" / "chimera"), "run", "-p", "And God said", "-n", "4",
                           "--temp", "0"], capture_output=True, text=True, timeout=120,
                          cwd=elsewhere, env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"loaded {moved / 'share' / 'chimera' / 'models' / 'default.gguf'}" in proc.stderr
