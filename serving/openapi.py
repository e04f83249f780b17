"""The HTTP API described in OpenAPI 3.1, served as ``GET /openapi.json``.

Written by hand, next to the routes it describes (:mod:`serving.app`), and held to them by
``tests/test_openapi.py``: the document lists exactly the app's routes and methods, is a valid OpenAPI 3.1
document, real answers (PNG, CSV, pair, batch, errors) validate against its schemas, and schemathesis sends
generated requests to every operation and checks each answer's status, media type and body against it.

A field every answer gains (:func:`serving.answers.answer`) gets its property in ``Answer`` here; answers may
carry more properties than listed (``additionalProperties`` is left open), so a client keeps working when
fields are added.
"""

from __future__ import annotations

from typing import Any

from shared.labels import CODES

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.2"

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_TOP_K = {"name": "top_k", "in": "query", "required": False,
          "description": "add a ranked list of this many labels (0: none; more than 12 lists all)",
          "schema": {"type": "integer", "minimum": 0, "maximum": 10000, "default": 0}}
_FLAG = {"type": "string", "enum": ["0", "1", "true", "false", "yes", "no", "on", "off"]}
_EXPLAIN = {"name": "explain", "in": "query", "required": False,
            "description": "1/true: add `explanation`, occlusion heat maps of what drove the answer (about a hundred "
                           "occluded copies of the card go through the model in one call; nothing is spent without it)",
            "schema": _FLAG}
_INCLUDE_INPUT = {"name": "include_input", "in": "query", "required": False,
                  "description": "1/true: add the card and the model's input as pictures and samples "
                                 "(card_png, card_samples, input_png, input_series)",
                  "schema": _FLAG}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"], "additionalProperties": False,
        "properties": {"error": _ref("ErrorDetail")},
    },
    "ErrorDetail": {
        "type": "object", "required": ["code", "message"], "additionalProperties": False,
        "properties": {
            "code": {"type": "string", "description": "stable machine-readable code, e.g. invalid_card, "
                                                      "mismatched_pair, unsupported_media_type"},
            "message": {"type": "string", "description": "a sentence a person can act on"},
        },
    },
    "Label": {"type": "string", "enum": list(CODES), "description": "condition code A01 ... A12"},
    "ModelId": {
        "type": "object", "required": ["name", "version", "kind"],
        "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                       "kind": {"type": "string", "enum": ["image", "series", "dual"]}},
    },
    "ModelCount": {
        "allOf": [_ref("ModelId")],
        "type": "object", "required": ["cards"],
        "properties": {"cards": {"type": "integer", "minimum": 1, "description": "cards this model answered"}},
    },
    "Probability": {"type": "number", "minimum": 0, "maximum": 1},
    "Samples": {
        "type": "array", "items": {"type": "number"},
    },
    "Ranked": {
        "type": "object", "required": ["label", "name", "name_en", "probability"],
        "properties": {"label": _ref("Label"), "name": {"type": "string"}, "name_en": {"type": "string"},
                       "probability": _ref("Probability")},
    },
    "Measure": {
        "type": "object", "required": ["value", "unit"],
        "properties": {"value": {"type": ["number", "null"]}, "unit": {"type": "string"}},
    },
    "Measures": {
        "description": "what an engineer reads off the card, each with its unit: from the CSV when the model read one "
                       "(basis series: kN, m, kJ), else from the PNG's outline (basis outline: fractions of the "
                       "image); fillage null when the card shows no load drop; or why no measure could be taken",
        "oneOf": [
            {"type": "object", "required": ["basis", "fillage", "peak_load", "min_load", "load_range", "stroke", "area",
                                            "fullness"],
             "properties": {"basis": {"type": "string", "enum": ["series", "outline"]},
                            **{k: _ref("Measure") for k in ("fillage", "peak_load", "min_load", "load_range", "stroke",
                                                            "area", "fullness")}}},
            {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        ],
    },
    "Advice": {
        "type": "object", "required": ["cause", "cause_en", "remedy", "remedy_en", "sources"],
        "description": "the predicted condition's likely cause and usual remedy (Chinese, English) and the sources "
                       "they rest on: a starting point for a person, not a work order",
        "properties": {"cause": {"type": "string"}, "cause_en": {"type": "string"}, "remedy": {"type": "string"},
                       "remedy_en": {"type": "string"}, "sources": {"type": "array", "items": {"type": "string"}}},
    },
    "ReviewRule": {
        "type": "object", "required": ["rule", "min_top"],
        "description": "the rule `review` followed: the model's fitted one (rule meta: top probability below min_top "
                       "or margin to the runner-up below min_margin, chosen on held-out cards for target_precision) "
                       "or, for a model without one, the fallback (rule low_confidence: top probability below min_top)",
        "properties": {"rule": {"type": "string", "enum": ["meta", "low_confidence"]},
                       "min_top": _ref("Probability"), "min_margin": _ref("Probability"),
                       "target_precision": _ref("Probability")},
    },
    "Answer": {
        "type": "object",
        "required": ["label", "name", "name_en", "confidence", "probabilities", "top2", "unknown", "unknown_score",
                     "unknown_reasons", "unknown_basis", "review", "review_rule", "measures", "advice", "model"],
        "properties": {
            "label": _ref("Label"),
            "name": {"type": "string", "description": "the condition in Chinese, e.g. 供液不足"},
            "name_en": {"type": "string", "description": "the condition in English, e.g. insufficient liquid"},
            "confidence": _ref("Probability"),
            "probabilities": {"type": "object", "additionalProperties": _ref("Probability"),
                              "propertyNames": _ref("Label"), "description": "all 12, in label order"},
            "top2": {"type": "array", "items": _ref("Ranked"), "minItems": 2, "maxItems": 2,
                     "description": "the answer and the runner-up"},
            "top_k": {"type": "array", "items": _ref("Ranked")},
            "other_probability": {**_ref("Probability"), "description": "models with a 13th output: the probability "
                                                                        "of none of the twelve"},
            "unknown": {"type": "boolean", "description": "not a dynamometer card, or none of the twelve conditions: "
                                                          "the structural card check failed or the model's open-set "
                                                          "rule fired; label and probabilities are kept"},
            "unknown_score": {**_ref("Probability"), "description": "how far the card is from one of the twelve: the "
                                                                    "larger of 1 - the structural check's score and "
                                                                    "the model's p(none of the twelve)"},
            "unknown_reasons": {"type": "array", "items": {"type": "string"},
                                "description": "why it is unknown, as a person reads it (empty when it is not)"},
            "unknown_basis": {"type": "array", "items": {"type": "string", "enum": ["outline", "series",
                                                                                    "outlier_exposure"]},
                              "description": "what the verdict rests on: the structural check of the PNG's outline "
                                             "and/or the CSV's samples, and the model's 'none of the twelve' output"},
            "review": {"type": "boolean", "description": "a person should check this answer (review_rule says why)"},
            "review_rule": _ref("ReviewRule"),
            "measures": _ref("Measures"),
            "advice": {"oneOf": [_ref("Advice"), {"type": "null"}]},
            "model": {"allOf": [_ref("ModelId")], "description": "the model that answered this card"},
        },
    },
    "ClassifyAnswer": {
        "allOf": [_ref("Answer")],
        "type": "object", "required": ["input", "elapsed_ms"],
        "properties": {
            "input": {"type": "object", "required": ["kind"], "properties": {
                "kind": {"type": "string", "enum": ["png", "csv", "pair"],
                         "description": "what the model read: the PNG, the CSV, or both (dual model)"},
                "filename": {"type": "string"}, "series_filename": {"type": "string"}}},
            "card_png": {"type": "string", "pattern": "^data:image/png;base64,",
                         "description": "include_input: the card's outline, dark on white"},
            "card_samples": {"type": "object", "required": ["position_m", "load_kN"],
                             "description": "include_input, a CSV card: the stroke in its units",
                             "properties": {"position_m": _ref("Samples"), "load_kN": _ref("Samples")}},
            "input_png": {"type": "string", "pattern": "^data:image/png;base64,",
                          "description": "include_input, image and dual models: the filled card the network read"},
            "input_series": {"type": "object", "required": ["position", "load"],
                             "description": "include_input, series and dual models: the position and load the "
                                            "network read (0-1, resampled in time order)",
                             "properties": {"position": _ref("Samples"), "load": _ref("Samples")}},
            "explanation": _ref("Explanation"),
            "elapsed_ms": {"type": "number", "minimum": 0},
        },
    },
    "Explanation": {
        "type": "object", "required": ["method", "label", "probability", "copies"],
        "description": "explain=1: what drove the answer, by occlusion -- parts of the input hidden one at a time, "
                       "scored by the drop of the answered class's probability; each map is scaled to its largest "
                       "drop (max_drop: near 0, no one part mattered)",
        "properties": {
            "method": {"const": "occlusion"}, "label": _ref("Label"), "probability": _ref("Probability"),
            "copies": {"type": "integer", "minimum": 1, "description": "occluded copies run with the card"},
            "image": {"type": "object", "required": ["heatmap_png", "frame", "patch", "grid", "max_drop"],
                      "description": "image and dual models: a grey patch slid over the filled card",
                      "properties": {
                          "heatmap_png": {"type": "string", "pattern": "^data:image/png;base64,",
                                          "description": "RGBA heat map in the frame of input_png (the filled card "
                                                         "the model read): transparent = no effect, red = most"},
                          "frame": {"const": "input_png"},
                          "patch": {"type": "array", "items": {"type": "integer"}},
                          "grid": {"type": "array", "items": {"type": "array", "items": {"type": "number"}},
                                   "description": "the probability drop at each patch position, rows x columns"},
                          "max_drop": {"type": "number"}}},
            "series": {"type": "object", "required": ["heatmap_png", "frame", "window", "weights", "max_drop"],
                       "description": "series and dual models: a window of the load samples replaced by a straight "
                                      "line",
                       "properties": {
                           "heatmap_png": {"type": "string", "pattern": "^data:image/png;base64,",
                                           "description": "the stroke coloured by weight, in the frame of the "
                                                          "card's bounding box (position and load from their "
                                                          "minimum to their maximum)"},
                           "frame": {"const": "card_box"},
                           "window": {"type": "integer"},
                           "weights": {"type": "array", "items": {"type": "number"},
                                       "description": "per sample of input_series, 0-1"},
                           "max_drop": {"type": "number"}}},
        },
    },
    "BatchResult": {
        "type": "object", "required": ["id", "file"],
        "description": "one card: its answer (the Answer properties), or its error",
        "properties": {
            "id": {"type": "string", "description": "the card id (file stem)"},
            "file": {"type": "string"},
            "kind": {"type": "string", "enum": ["png", "csv", "pair"]},
            "error": _ref("ErrorDetail"),
        },
        "oneOf": [{"required": ["error"]}, {"allOf": [_ref("Answer")], "not": {"required": ["error"]}}],
    },
    "BatchAnswer": {
        "type": "object", "required": ["count", "ok", "errors", "results", "model", "models", "elapsed_ms"],
        "properties": {
            "count": {"type": "integer", "minimum": 0}, "ok": {"type": "integer", "minimum": 0},
            "errors": {"type": "integer", "minimum": 0},
            "results": {"type": "array", "items": _ref("BatchResult"), "description": "in upload order"},
            "model": {"oneOf": [_ref("ModelId"), {"type": "null"}],
                      "description": "the one model that answered every card; null when several (or none) did"},
            "models": {"type": "array", "items": _ref("ModelCount"),
                       "description": "every model that answered, with its number of cards"},
            "elapsed_ms": {"type": "number", "minimum": 0},
        },
    },
    "AccuracyFigure": {
        "type": "object", "required": ["key", "accuracy", "real_cards", "measured_on"],
        "properties": {
            "key": {"type": "string", "description": "where in meta.json metrics it comes from"},
            "accuracy": _ref("Probability"), "cards": {"type": ["integer", "null"]},
            "real_cards": {"type": "boolean"}, "measured_on": {"type": "string"}, "note": {"type": "string"},
        },
    },
    "ModelInfo": {
        "type": "object", "required": ["model", "labels", "preprocess", "metrics", "device", "models", "accuracy",
                                       "service"],
        "properties": {
            "model": {"allOf": [_ref("ModelId")], "description": "the image model (the primary one)"},
            "labels": {"type": "array", "items": {"type": "object", "required": ["code", "name", "name_en"]}},
            "accuracy": {"type": "array", "items": _ref("AccuracyFigure"),
                         "description": "the primary model's figures, real cards first"},
            "models": {"type": "object", "description": "every loaded model by kind", "additionalProperties": {
                "type": "object", "required": ["name", "version", "kind", "metrics", "accuracy"],
                "properties": {"accuracy": {"type": "array", "items": _ref("AccuracyFigure")}}}},
            "metrics": {"type": "object", "description": "meta.json metrics of the primary model"},
            "preprocess": {"type": "object"}, "device": {"type": "object"}, "service": {"type": "object"},
        },
    },
}

_CARD_BODY = {
    "required": True,
    "description": "one card: its PNG or CSV in the multipart field `file` (with a dual model, the PNG in "
                   "`file` and the same card's CSV in `series`), or the file as the whole body",
    "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "required": ["file"], "properties": {
                "file": {"type": "string", "format": "binary", "description": "the card's PNG or CSV"},
                "series": {"type": "string", "format": "binary",
                           "description": "the same card's CSV, with its PNG in `file` (the dual model reads both; "
                                          "a PNG and a CSV of two different cards: 422 mismatched_pair)"}}},
        },
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "text/csv": {"schema": {"type": "string"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}

_BATCH_BODY = {
    "required": True,
    "description": "several cards as multipart files (any field name; with a dual model a PNG and a CSV of the "
                   "same name are one card), or one zip (multipart or the whole body)",
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
        "application/zip": {"schema": {"type": "string", "format": "binary"}},
    },
}

_AUTH_ERRORS = {"401": _error("this service needs an API token (CARDSENSE_API_TOKEN is set) and none or a "
                              "wrong one was sent")}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the service (a new dict each call)."""
    secured = [{}, {"bearer": []}, {"token": []}]  # no token needed unless CARDSENSE_API_TOKEN is set
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "CardSense",
            "version": API_VERSION,
            "summary": "Dynamometer-card diagnosis of sucker-rod pumping wells",
            "description": "Send a card (PNG, CSV, or both) and get which of twelve working conditions the pump is "
                           "in. A PNG goes to the image model, a CSV to the series model (the image model reads it "
                           "rendered when no series model is loaded), a PNG and the CSV of the same card to the dual "
                           "model. Every answer names the model that gave it. Errors are JSON "
                           "{\"error\": {\"code\", \"message\"}}. See docs/SERVING.md and docs/USER_GUIDE.md.",
        },
        "paths": {
            "/classify": {"post": {
                "operationId": "classify",
                "summary": "Classify one card",
                "security": secured,
                "parameters": [_TOP_K, _INCLUDE_INPUT, _EXPLAIN],
                "requestBody": _CARD_BODY,
                "responses": {
                    "200": _json(_ref("ClassifyAnswer"), "the condition, its confidence and all 12 probabilities, "
                                                         "whether it is a card of the twelve at all (unknown), "
                                                         "whether to check it (review), the card's measures and "
                                                         "the condition's advice"),
                    "400": _error("no card, an empty one, two cards, or a bad query parameter"),
                    **_AUTH_ERRORS,
                    "403": _error("explain=1 while explanations are turned off (CARDSENSE_EXPLAIN=off: explain_off) "
                                  "or kept for requests carrying the API token (CARDSENSE_EXPLAIN=token: "
                                  "explain_needs_token)"),
                    "413": _error("larger than CARDSENSE_MAX_UPLOAD_MB"),
                    "415": _error("not a PNG or CSV (a zip goes to /classify/batch)"),
                    "422": _error("not a usable card (invalid_card), or a PNG and a CSV of two different cards "
                                  "(mismatched_pair)"),
                },
            }},
            "/classify/batch": {"post": {
                "operationId": "classifyBatch",
                "summary": "Classify several cards; one bad card does not fail the others",
                "security": secured,
                "parameters": [_TOP_K],
                "requestBody": _BATCH_BODY,
                "responses": {
                    "200": _json(_ref("BatchAnswer"), "one result per card, in upload order"),
                    "400": _error("no files in the request, or a bad query parameter"),
                    **_AUTH_ERRORS,
                    "413": _error("larger than CARDSENSE_MAX_BATCH_UPLOAD_MB, or more than CARDSENSE_MAX_BATCH_CARDS "
                                  "cards"),
                    "415": _error("the body is neither multipart nor a zip"),
                    "422": _error("a zip that cannot be opened at all"),
                },
            }},
            "/model": {"get": {
                "operationId": "model",
                "summary": "The loaded models: names, labels, preprocessing, device, accuracy figures (real cards "
                           "first) and service limits",
                "security": secured,
                "responses": {"200": _json(_ref("ModelInfo"), "model information"), **_AUTH_ERRORS},
            }},
            "/healthz": {"get": {
                "operationId": "healthz", "summary": "Liveness: the worker answers",
                "responses": {"200": _json({"type": "object", "required": ["status"],
                                            "properties": {"status": {"const": "ok"}, "pid": {"type": "integer"}}},
                                           "alive")},
            }},
            "/readyz": {"get": {
                "operationId": "readyz", "summary": "Readiness: the model is loaded and warmed up",
                "responses": {
                    "200": _json({"type": "object", "required": ["status", "model"],
                                  "properties": {"status": {"const": "ready"}, "model": _ref("ModelId"),
                                                 "device": {"type": "string"}}}, "ready"),
                    "503": _error("still loading"),
                },
            }},
            "/metrics": {"get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics, over all workers (cardsense_predictions_total{label, model}, "
                           "request counts and latencies, errors by code)",
                "responses": {"200": {"description": "Prometheus text exposition",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}}},
            }},
            "/openapi.json": {"get": {
                "operationId": "openapi", "summary": "This document",
                "responses": {"200": _json({"type": "object", "required": ["openapi", "paths"]}, "OpenAPI 3.1")},
            }},
            "/": {"get": {
                "operationId": "webPage", "summary": "The web page: drop cards, read the answers",
                "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}},
            }},
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "the token of CARDSENSE_API_TOKEN (only when it is set)"},
                "token": {"type": "apiKey", "in": "header", "name": "X-API-Token",
                          "description": "the same token in a header of its own"},
            },
        },
    }
