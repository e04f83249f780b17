"""GET /openapi.json: a valid OpenAPI 3.1 document of exactly the app's routes, whose schemas the real answers
meet -- checked on hand-picked cards and errors, and by schemathesis sending generated requests to every
operation (image, series and dual models loaded)."""

from __future__ import annotations

import io

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from serving.openapi import openapi_document
from tests.conftest import card_csv, card_png
from tests.test_dual_serving import _client, dual_model, extras, series_model  # noqa: F401

DOC_URI = "urn:cardsense:openapi"


@pytest.fixture()
def app_all(tiny_model, predictor, extras):  # noqa: F811
    return _client(tiny_model, predictor, [extras["series"], extras["dual"]]).application


@pytest.fixture()
def client_all(app_all):
    return app_all.test_client()


def validator(schema_name: str) -> Draft202012Validator:
    """A JSON Schema validator for one of the document's component schemas (OpenAPI 3.1 = JSON Schema 2020-12)."""
    registry = Registry().with_resource(DOC_URI, DRAFT202012.create_resource(openapi_document()))
    return Draft202012Validator({"$ref": f"{DOC_URI}#/components/schemas/{schema_name}"}, registry=registry)


def assert_meets(body, schema_name: str) -> None:
    errors = sorted(validator(schema_name).iter_errors(body), key=str)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]


def test_the_document_is_valid_openapi_31_and_served(client_all):
    from openapi_spec_validator import validate

    doc = openapi_document()
    assert doc["openapi"].startswith("3.1")
    validate(doc)
    r = client_all.get("/openapi.json")
    assert r.status_code == 200 and r.mimetype == "application/json"
    assert r.get_json() == doc


def test_the_document_lists_exactly_the_apps_routes(app_all):
    routes = {(rule.rule, method.lower()) for rule in app_all.url_map.iter_rules()
              if rule.endpoint != "static" for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, item in openapi_document()["paths"].items() for method in item}
    assert documented == routes


def test_real_answers_meet_the_schemas(client_all):
    def post(url, **files):
        data = {k: (io.BytesIO(v), n) for k, (v, n) in files.items()}
        return client_all.post(url, data=data, content_type="multipart/form-data")

    for r in (post("/classify?include_input=1&top_k=3", file=(card_png("pound"), "a.png")),
              post("/classify?include_input=1", file=(card_csv("dome"), "b.csv")),
              post("/classify?include_input=1", file=(card_png("normal"), "c.png"), series=(card_csv("normal"), "c.csv")),
              client_all.post("/classify", data=card_csv("normal"), content_type="text/csv"),
              post("/classify?explain=1", file=(card_png("dome"), "d.png")),
              post("/classify?explain=1", file=(card_csv("dome"), "d.csv")),
              post("/classify?explain=1", file=(card_png("normal"), "c.png"), series=(card_csv("normal"), "c.csv"))):
        assert r.status_code == 200, r.json
        assert_meets(r.json, "ClassifyAnswer")
    batch = client_all.post("/classify/batch?top_k=2", data={
        "a": (io.BytesIO(card_png("normal")), "x.png"), "b": (io.BytesIO(card_csv("normal")), "x.csv"),
        "c": (io.BytesIO(card_csv("dome")), "y.csv"), "d": (io.BytesIO(b"junk"), "z.png"),
        "e": (io.BytesIO(card_png("pound")), "w.png"), "f": (io.BytesIO(card_csv("sliver", 3)), "w.csv"),
    }, content_type="multipart/form-data")
    assert batch.status_code == 200
    assert_meets(batch.json, "BatchAnswer")
    assert {x.get("error", {}).get("code") for x in batch.json["results"]} >= {"invalid_card", "mismatched_pair"}
    assert_meets(client_all.get("/model").json, "ModelInfo")
    for r, status in ((client_all.post("/classify", data=b""), 400),
                      (post("/classify", file=(b"GIF89a....", "x.gif")), 415),
                      (post("/classify", file=(b"\x89PNG\r\n\x1a\nbroken", "x.png")), 422),
                      (post("/classify", file=(card_png("pound"), "a.png"), series=(card_csv("dome", 3), "b.csv")), 422),
                      (client_all.post("/classify?top_k=x", data=card_png("normal"), content_type="image/png"), 400)):
        assert r.status_code == status, r.json
        assert_meets(r.json, "Error")
        # the status is one the document lists for the operation
        assert str(status) in openapi_document()["paths"]["/classify"]["post"]["responses"]


schema = schemathesis.pytest.from_fixture("openapi_schema")


@pytest.fixture()
def openapi_schema(app_all):
    return schemathesis.openapi.from_wsgi("/openapi.json", app_all)


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_generated_requests_get_documented_answers(case):
    """Any request the document allows gets an answer the document describes: no 5xx, a documented status
    and media type, a body that meets its schema."""
    case.call_and_validate(checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                                   response_schema_conformance])
