"""CARDSENSE_EXPLAIN: the operator decides who gets ``?explain=1`` (on / off / token), with the Flask test client."""

from __future__ import annotations

import pytest

from serving.config import ConfigError, ServingConfig
from tests.conftest import card_png

TOKEN = "s3cret-token"


def _explain(client, **headers):
    return client.post("/classify?explain=1", data=card_png("dome"), content_type="image/png", headers=headers)


def test_on_is_the_default_and_explains():
    assert ServingConfig.from_env({}).explain == "on"
    assert ServingConfig.from_env({"CARDSENSE_EXPLAIN": " Token "}).explain == "token"
    with pytest.raises(ConfigError, match="CARDSENSE_EXPLAIN='sometimes'; expected one of on, off, token"):
        ServingConfig.from_env({"CARDSENSE_EXPLAIN": "sometimes"})


def test_on_explains_for_anyone_who_may_classify(make_app):
    client = make_app().test_client()
    r = _explain(client)
    assert r.status_code == 200 and r.json["explanation"]["copies"] > 1
    assert client.get("/model").json["service"]["explain"] == "on"


def test_off_refuses_explanations_and_answers_the_rest(make_app):
    client = make_app(explain="off").test_client()
    r = _explain(client)
    assert r.status_code == 403 and r.is_json
    assert r.json["error"]["code"] == "explain_off" and "turned off" in r.json["error"]["message"]
    plain = client.post("/classify", data=card_png("dome"), content_type="image/png")
    assert plain.status_code == 200 and "explanation" not in plain.json
    assert client.post("/classify?explain=0", data=card_png("dome"), content_type="image/png").status_code == 200
    assert client.get("/model").json["service"]["explain"] == "off"


def test_token_explains_only_for_requests_carrying_the_api_token(make_app):
    client = make_app(explain="token", api_token=TOKEN).test_client()
    for headers in ({"Authorization": f"Bearer {TOKEN}"}, {"X-API-Token": TOKEN}):
        r = _explain(client, **headers)
        assert r.status_code == 200 and "explanation" in r.json, headers
    # Without the token the route itself refuses (the token guards /classify whenever it is set).
    assert _explain(client).status_code == 401
    assert _explain(client, Authorization="Bearer wrong").status_code == 401


def test_token_without_a_configured_token_refuses_every_explanation(make_app):
    client = make_app(explain="token").test_client()
    for headers in ({}, {"Authorization": "Bearer anything"}):
        r = _explain(client, **headers)
        assert r.status_code == 403 and r.json["error"]["code"] == "explain_needs_token", headers
        assert "none is configured" in r.json["error"]["message"]
    plain = client.post("/classify", data=card_png("dome"), content_type="image/png")
    assert plain.status_code == 200 and "explanation" not in plain.json
