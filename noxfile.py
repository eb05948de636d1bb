"""CI sessions: `nox -s lint tests tests_zoo` (the README's test command)."""

from __future__ import annotations

import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests", "tests_zoo"]

# tests and tests_zoo share one environment: torch's CUDA build and TensorFlow take about 8 GB,
# and a copy per session filled a CI runner's disk
TEST_ENV = Path(".nox") / "test-env"


def test_env(session: nox.Session) -> Path:
    """Create (once) and update the shared test environment; returns its `bin` folder."""
    bin_dir = TEST_ENV / "bin"
    if not (bin_dir / "python").exists():
        session.run(sys.executable, "-m", "venv", str(TEST_ENV), external=True)
    pip = (str(bin_dir / "python"), "-m", "pip", "install", "--quiet")
    session.run(*pip, "-e", ".[test,cluster,tf,fetch]", external=True)
    session.run(*pip, "--no-deps", "-r", "model_zoo/requirements.txt", external=True)
    return bin_dir


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "onnxattr", "model_zoo", "tests", "benchmarks", "noxfile.py")


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """The default suite: tiny models built in code, a few minutes on 2 CPU cores."""
    session.run(str(test_env(session) / "pytest"), "-q", *session.posargs, external=True)


@nox.session(venv_backend="none")
def tests_zoo(session: nox.Session) -> None:
    """Real pretrained zoo models and TensorFlow/tf2onnx (Keras, TFLite): heavy, kept apart."""
    session.run(str(test_env(session) / "pytest"), "-q", "-m", "tf or slow", *session.posargs,
                external=True)
