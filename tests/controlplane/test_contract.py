"""The API contract at its edges: every error is JSON with a code, oversized and malformed requests
are refused with the right status, bad query parameters are named, and the OpenAPI schema says all
of it (error answers, nullable fields, unknown fields refused)."""

from __future__ import annotations

import io
import json

import pytest
from django.core.exceptions import RequestDataTooBig
from django.test import RequestFactory

from controlplane.choices import Role
from controlplane.errors import handler400
from controlplane.parsers import JSONParser, RequestTooLarge
from deployments.models import Artifact, Deployment, Release
from tests.factories import AppFactory, AppRegionFactory, RegionFactory, StageFactory


@pytest.fixture
def app(team):
    app = AppFactory(team=team, slug="shop")
    AppRegionFactory(app=app, region=RegionFactory(code="us-east-1"))
    StageFactory(app=app, name="production")
    return app


@pytest.fixture
def admin(api_for, team, app):
    return api_for(team, role=Role.ADMIN)


def _error(answer, status: int) -> dict:
    assert answer.status_code == status, answer.content[:300]
    assert answer["Content-Type"].startswith("application/json")
    body = answer.json()
    assert body["code"] and body["detail"]
    return body


# --- Request size and shape --------------------------------------------------------------------


def test_a_2_mb_json_body_is_a_413_request_too_large(admin):
    body = json.dumps({"slug": "big", "runtime": "python3.12", "name": "x" * (2 * 1024 * 1024)})

    answer = admin.post("/api/v1/apps/", data=body, content_type="application/json")

    assert _error(answer, 413)["code"] == "request_too_large"


def test_a_json_body_without_a_length_is_read_no_further_than_the_limit(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    stream = io.BytesIO(b" " * 5000 + b"{}")

    with pytest.raises(RequestTooLarge):
        JSONParser().parse(stream, "application/json", {})
    assert stream.tell() == 1025
    assert JSONParser().parse(io.BytesIO(b'{"a": 1}'), "application/json", {}) == {"a": 1}


def test_2000_form_fields_in_an_upload_are_a_413_too_many_fields(admin):
    parts = [f'--B\r\nContent-Disposition: form-data; name="f{n}"\r\n\r\nv\r\n' for n in range(2000)]
    body = ("".join(parts) + "--B--\r\n").encode()

    answer = admin.generic(
        "POST", "/api/v1/apps/shop/artifacts/", data=body, content_type="multipart/form-data; boundary=B"
    )

    assert _error(answer, 413)["code"] == "too_many_fields"


def test_a_form_body_to_a_json_endpoint_is_a_415(admin):
    body = "&".join(f"f{n}=v" for n in range(2000))

    answer = admin.generic(
        "POST", "/api/v1/apps/", data=body, content_type="application/x-www-form-urlencoded"
    )

    assert _error(answer, 415)["code"] == "unsupported_media_type"


def test_an_upload_over_the_zip_limit_is_a_413_json_before_it_is_read(admin):
    answer = admin.generic(
        "POST",
        "/api/v1/apps/shop/artifacts/",
        data=b"--B\r\n",
        content_type="multipart/form-data; boundary=B",
        CONTENT_LENGTH=str(60 * 1024 * 1024),
    )

    assert _error(answer, 413)["code"] == "artifact_too_large"


def test_a_webhook_body_over_its_limit_is_a_413_request_too_large(anon_api, settings):
    settings.WEBHOOK_MAX_BODY = 1024

    answer = anon_api.post(
        "/api/v1/hooks/github/", data=json.dumps({"x": "y" * 4096}), content_type="application/json"
    )

    assert _error(answer, 413)["code"] == "request_too_large"


def test_django_refusing_a_body_on_an_api_path_answers_json_and_a_page_elsewhere(db):
    factory = RequestFactory()
    too_big = RequestDataTooBig("Request body exceeded settings.DATA_UPLOAD_MAX_MEMORY_SIZE.")

    api = handler400(factory.post("/api/v1/apps/"), too_big)
    page = handler400(factory.post("/apps/new/"), too_big)

    assert api.status_code == 413 and json.loads(api.content)["code"] == "request_too_large"
    assert page.status_code == 413 and page["Content-Type"].startswith("text/html")


def test_a_ui_form_with_too_many_fields_gets_the_html_page(client, db):
    body = "&".join(f"f{n}=v" for n in range(2000))

    answer = client.generic("POST", "/login/", data=body, content_type="application/x-www-form-urlencoded")

    assert answer.status_code == 413
    assert answer["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"stage": "production", "artifact": 1, "surprise": 1}, "surprise"),
        ({"stage": "production", "artifact": "1"}, "artifact"),
        ({"stage": "production", "artifact": 1, "force": 0}, "force"),
        ({"stage": 5, "artifact": 1}, "stage"),
    ],
)
def test_unknown_fields_and_values_of_the_wrong_type_are_refused(admin, body, field):
    answer = admin.post("/api/v1/apps/shop/deployments/", body, format="json")

    error = _error(answer, 400)
    assert field in error["fields"]
    assert error["code"] in ("unknown_field", "invalid")


# --- Query parameters --------------------------------------------------------------------------

LISTS = [
    "/api/v1/apps/",
    "/api/v1/apps/shop/deployments/",
    "/api/v1/apps/shop/releases/",
    "/api/v1/apps/shop/env/",
    "/api/v1/audit/",
    "/api/v1/channels/",
    "/api/v1/regions/",
]


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("limit", ["abc", "0", "-1", "100000", "", "1.5"])
def test_a_bad_limit_is_a_400_naming_it(admin, path, limit):
    error = _error(admin.get(path, {"limit": limit}), 400)

    assert error["code"] == "invalid"
    assert "limit" in error["fields"] and "limit" in error["detail"]


@pytest.mark.parametrize("path", ["/api/v1/apps/", "/api/v1/apps/shop/deployments/"])
def test_asking_for_another_order_is_a_400_naming_ordering(admin, path):
    error = _error(admin.get(path, {"ordering": "created_at"}), 400)

    assert error["code"] == "invalid" and "ordering" in error["fields"]


def test_limits_in_range_page(admin):
    assert admin.get("/api/v1/apps/", {"limit": "1"}).status_code == 200
    assert admin.get("/api/v1/apps/", {"limit": "200"}).status_code == 200


@pytest.mark.parametrize(
    ("param", "value"),
    [("status", "bogus"), ("sha", "not-hex"), ("sha", "ab"), ("kind", "teleport")],
)
def test_a_bad_deployment_filter_is_a_400_naming_it(admin, param, value):
    error = _error(admin.get("/api/v1/apps/shop/deployments/", {param: value}), 400)

    assert error["code"] == "invalid"
    assert param in error["fields"] and error["detail"].startswith(param)


def test_good_deployment_filters_still_filter(admin):
    answer = admin.get("/api/v1/apps/shop/deployments/", {"status": "failed", "sha": "abc1234"})

    assert answer.status_code == 200 and answer.json()["results"] == []


def test_a_bad_cursor_is_a_400_naming_it(admin):
    error = _error(admin.get("/api/v1/apps/", {"cursor": "bm90LWEtY3Vyc29y"}), 400)

    assert error["code"] == "invalid_cursor" and "cursor" in error["fields"]


@pytest.fixture
def deployment(app):
    stage = app.stages.get()
    artifact = Artifact.objects.create(app=app, sha256="c" * 64, size=1)
    release = Release.objects.create(app=app, stage=stage, number=1, artifact=artifact)
    return Deployment.objects.create(app=app, stage=stage, release=release)


@pytest.mark.parametrize(
    ("param", "value"), [("after", "abc"), ("after", "-5"), ("limit", "0"), ("limit", "1001")]
)
def test_bad_event_parameters_are_a_400_naming_them(admin, deployment, param, value):
    error = _error(admin.get(f"/api/v1/deployments/{deployment.pk}/events/", {param: value}), 400)

    assert error["code"] == "invalid" and param in error["fields"]


@pytest.mark.parametrize("against", ["abc", "0", "first"])
def test_a_bad_release_to_compare_with_is_a_400_naming_it(admin, deployment, against):
    error = _error(admin.get(f"/api/v1/releases/{deployment.release_id}/diff/", {"against": against}), 400)

    assert error["code"] == "invalid" and "against" in error["fields"]


def test_the_schema_bounds_limit_so_clients_know_the_range(schema):
    operation = schema["paths"]["/api/v1/apps/"]["get"]
    limit = next(p for p in operation["parameters"] if p["name"] == "limit")

    assert limit["schema"]["minimum"] == 1 and limit["schema"]["maximum"] == 200


def test_an_unknown_api_url_is_a_json_404(admin):
    body = _error(admin.get("/api/v1/no-such-thing/"), 404)

    assert body["code"] == "not_found"


def test_an_unknown_ui_url_is_an_html_404(client, db):
    answer = client.get("/no-such-page/")

    assert answer.status_code == 404 and answer["Content-Type"].startswith("text/html")


# --- The schema --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    from drf_spectacular.generators import SchemaGenerator

    with django_db_blocker.unblock():
        return json.loads(json.dumps(SchemaGenerator().get_schema(request=None, public=True), default=str))


def _prop(schema, component: str, name: str) -> dict:
    return schema["components"]["schemas"][component]["properties"][name]


@pytest.mark.parametrize(
    ("component", "field"),
    [
        ("Release", "source_release"),
        ("Notification", "app"),
        ("Notification", "response_code"),
        ("ApiToken", "app"),
        ("ApiToken", "expires_at"),
        ("RegionDeployment", "finished_at"),
        ("Deployment", "started_at"),
        ("EnvVar", "stage"),
        ("AuditEntry", "app"),
    ],
)
def test_the_schema_marks_nullable_fields_nullable(schema, component, field):
    assert _prop(schema, component, field).get("nullable") is True


def test_the_schema_does_not_mark_required_columns_nullable(schema):
    assert not _prop(schema, "Release", "number").get("nullable")
    assert not _prop(schema, "Deployment", "status").get("nullable")


def test_lists_document_their_error_answers(schema):
    responses = schema["paths"]["/api/v1/apps/{app}/deployments/"]["get"]["responses"]

    assert {"200", "400", "401", "403", "404"} <= set(responses)
    error = responses["400"]["content"]["application/json"]["schema"]["$ref"]
    assert error.endswith("/Error")
    assert {"code", "detail"} <= set(schema["components"]["schemas"]["Error"]["required"])


def test_writes_document_invalid_input_and_oversized_bodies(schema):
    for path, method in [("/api/v1/apps/", "post"), ("/api/v1/apps/{app}/", "patch")]:
        assert {"400", "401", "403", "413"} <= set(schema["paths"][path][method]["responses"])
    assert "409" in schema["paths"]["/api/v1/apps/{app}/"]["delete"]["responses"]


def test_request_bodies_refuse_unknown_fields_in_the_schema(schema):
    components = schema["components"]["schemas"]

    for name in ("AppCreateRequest", "PatchedAppUpdateRequest", "DeploymentCreateRequest", "CommitInRequest"):
        assert components[name]["additionalProperties"] is False, name


def test_the_api_takes_json_only_except_uploads(schema):
    create = schema["paths"]["/api/v1/apps/"]["post"]["requestBody"]["content"]
    upload = schema["paths"]["/api/v1/apps/{app}/artifacts/"]["post"]["requestBody"]["content"]

    assert set(create) == {"application/json"}
    assert set(upload) == {"multipart/form-data"}
