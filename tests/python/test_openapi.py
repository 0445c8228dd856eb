"""The served OpenAPI document is valid OpenAPI 3.1 and names every route
of the router (the contract run in tests/contract checks the answers)."""

import pathlib
import re

import requests
from openapi_spec_validator import validate

ROUTER = pathlib.Path(__file__).resolve().parents[2] / "crates/swarmgate-server/src/http/mod.rs"


def _routed_paths():
    """Every path given to `.route(` in `fn router`, rustfmt's wrapped
    form (the path on the next line) included."""
    source = ROUTER.read_text()
    body = source.split("pub fn router(", 1)[1].split("\n}\n", 1)[0]
    return sorted(set(re.findall(r'\.route\(\s*"([^"]+)"', body)))


def _document(base):
    response = requests.get(f"{base}/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def test_the_document_is_valid_openapi_3_1(swarmgate):
    document = _document(swarmgate)
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_every_route_of_the_router_is_documented(swarmgate):
    paths = _routed_paths()
    assert len(paths) > 50, paths
    documented = _document(swarmgate)["paths"]
    missing = [p for p in paths if p not in documented]
    assert not missing, missing
    # Configured gateway routes are described by one generic operation.
    assert "/{path}" in documented


def test_security_schemes_and_error_bodies_are_described(swarmgate):
    document = _document(swarmgate)
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer_jwt"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": schemes["bearer_jwt"]["description"],
    }
    assert schemes["api_key_header"]["in"] == "header"
    assert schemes["api_key_header"]["name"] == "X-API-Key"
    assert schemes["api_key_bearer"]["scheme"] == "bearer"
    flow = schemes["oauth2_client_credentials"]["flows"]["clientCredentials"]
    assert flow["tokenUrl"] == "/auth/token"
    error = document["components"]["schemas"]["ErrorBody"]
    assert "error" in error["required"]
    # Every authenticated operation documents the refusal of a credential.
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if operation.get("security") == [{}] or "oauth" in operation.get("tags", []):
                continue
            assert "401" in operation["responses"], (method, path)


def test_oauth_forms_are_form_encoded(swarmgate):
    paths = _document(swarmgate)["paths"]
    for path in ("/auth/token", "/api/auth/token", "/auth/introspect", "/auth/revoke"):
        content = paths[path]["post"]["requestBody"]["content"]
        assert list(content) == ["application/x-www-form-urlencoded"], path
