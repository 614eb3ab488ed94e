"""Issue 13 item 10: the published OpenAPI schema documents every operation's body and status
codes (the bounded schemathesis run in `make test` checks it against the live server; these
check the schema itself and the shapes the fuzzer first found wrong)."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from drf_spectacular.generators import SchemaGenerator

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


def _operations(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            yield path, method, operation


def test_the_schema_generates_without_warnings_and_validates(tmp_path):
    # --fail-on-warn: an operation without a documented body ("unable to guess serializer") fails.
    call_command("spectacular", file=str(tmp_path / "schema.yaml"), validate=True, fail_on_warn=True)


def test_every_operation_documents_its_errors_in_the_error_format(schema):
    assert schema["components"]["schemas"]["Error"]["required"] == ["error"]
    for path, method, operation in _operations(schema):
        responses = operation["responses"]
        assert "400" in responses, (method, path)
        secured = any(requirement for requirement in operation.get("security", [{}]))
        if secured:
            assert {"401", "403"} <= set(responses), (method, path)
        if "{" in path:
            assert "404" in responses, (method, path)
        for code, response in responses.items():
            if code.startswith(("4", "5")):
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


BODYLESS = {"/api/auth/logout", "/api/notifications/{notification_id}/opened"}


def test_every_body_taking_operation_documents_its_request(schema):
    for path, method, operation in _operations(schema):
        if method in ("post", "put", "patch") and path not in BODYLESS:
            assert "requestBody" in operation, (method, path)
            assert operation["requestBody"]["content"]["application/json"]["schema"], (method, path)


def test_device_list_is_documented_as_it_is_answered(schema, client_for, schools):
    documented = schema["paths"]["/api/notifications/devices"]["get"]["responses"]["200"]
    ref = documented["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    component = schema["components"]["schemas"][ref]
    assert component["type"] == "object" and component["properties"]["devices"]["type"] == "array"

    response = client_for(schools.a.teacher_user).get("/api/notifications/devices")
    assert response.status_code == 200
    assert set(response.json()) == {"devices"}


@pytest.mark.parametrize(
    "path", ["/api/notifications/devices/not-a-uuid", "/api/no-such-endpoint", "/realtime/v1/api/nothing"]
)
def test_a_path_that_matches_no_route_answers_the_json_error(api, path):
    response = api.delete(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "not_found"
