"""Security properties: optional bearer token (constant-time, /healthz open), user file names never become
paths, limits set, the image runs as non-root with no secrets and pinned dependencies."""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path

from tests.conftest import card_png

REPO = Path(__file__).resolve().parent.parent


def test_token_is_compared_in_constant_time():
    from serving import app

    assert "_carries_token(" in inspect.getsource(app._require_token)  # the one check of a sent token
    source = inspect.getsource(app._carries_token)
    assert "hmac.compare_digest(" in source
    assert not re.search(r"(given|token)\s*[!=]=\s*(given|token)", source)


def test_token_guards_the_api_but_not_the_probes(make_app):
    client = make_app(api_token="s3cret-token").test_client()
    png = card_png("normal")
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200, path
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer s3cret-toke"},
                    {"Authorization": "Basic czNjcmV0LXRva2Vu"}, {"X-API-Token": "S3CRET-TOKEN"}):
        r = client.post("/classify", data=png, content_type="image/png", headers=headers)
        assert r.status_code == 401 and r.get_json()["error"]["code"] == "unauthorized", headers
        assert client.get("/model", headers=headers).status_code == 401
    for headers in ({"Authorization": "Bearer s3cret-token"}, {"authorization": "bearer s3cret-token"},
                    {"X-API-Token": "s3cret-token"}):
        assert client.post("/classify", data=png, content_type="image/png", headers=headers).status_code == 200


def test_user_file_names_never_become_paths(make_app, tmp_path, monkeypatch):
    """A big upload (spooled by werkzeug) named like a path: nothing is written under that name anywhere."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    client = make_app().test_client()
    big = card_png("normal") + b"\0" * 700_000  # past werkzeug's 500 kB in-memory threshold
    names = ["../../pwned.png", "/tmp/pwned-abs.png", "C:\\pwned-drive.png", "sub/../../pwned-rel.png"]
    for name in names:
        r = client.post("/classify", data={"file": (__import__("io").BytesIO(big), name)},
                        content_type="multipart/form-data")
        assert r.status_code in (200, 422), r.get_json()
    written = [p for p in tmp_path.rglob("*pwned*")] + list(Path("/tmp").glob("pwned*"))
    assert not written, written
    assert not list((tmp_path / "tmp").iterdir())  # spooled temp files are anonymous and gone


def test_limits_are_set():
    from serving.config import ServingConfig

    cfg = ServingConfig()
    assert cfg.max_upload_mb and cfg.max_batch_upload_mb and cfg.max_batch_cards
    from shared import cards

    source = inspect.getsource(cards)
    assert re.search(r"MAX_PNG_PIXELS\s*=\s*[0-9_]+", source), "decoded-pixel limit"


def test_docker_image_runs_as_non_root_without_secrets():
    dockerfile = (REPO / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert not re.search(r"^(ENV|ARG)\s+\S*(TOKEN|PASSWORD|SECRET|API_KEY)\S*\s*=\s*\S", dockerfile, re.M | re.I)
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[0 if ignore[0] == "**" else 1].strip() == "**" or "**" in ignore  # allow-list: only named paths go in


def test_serving_dependencies_are_pinned():
    lines = [line.split("#")[0].strip() for line in (REPO / "requirements-serve.txt").read_text().splitlines()]
    loose = [line for line in lines if line and not line.startswith("-r") and "==" not in line]
    assert loose == [], loose


def test_security_md_states_limits_and_how_to_run_the_suite():
    text = (REPO / "SECURITY.md").read_text()
    for needle in ("CARDSENSE_API_TOKEN", "CARDSENSE_MAX_UPLOAD_MB", "scripts/hostile-suite.sh", "slow", "SIGHUP"):
        assert needle in text, needle
    assert os.access(REPO / "scripts" / "hostile-suite.sh", os.R_OK)
