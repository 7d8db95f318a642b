import pytest
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema

# The paths of teams, tokens, audit, regions, apps, stages and env vars, with their methods.
PATHS = {
    "/api/v1/teams/": {"get"},
    "/api/v1/tokens/": {"get", "post"},
    "/api/v1/tokens/{id}/": {"delete"},
    "/api/v1/audit/": {"get"},
    "/api/v1/regions/": {"get", "post"},
    "/api/v1/regions/{code}/": {"get", "patch"},
    "/api/v1/apps/": {"get", "post"},
    "/api/v1/apps/{app}/": {"get", "patch", "delete"},
    "/api/v1/apps/{app}/rotate-webhook-secret/": {"post"},
    "/api/v1/apps/{app}/stages/": {"get", "post"},
    "/api/v1/apps/{app}/stages/{stage}/": {"get", "patch", "delete"},
    "/api/v1/apps/{app}/env/": {"get", "post"},
    "/api/v1/apps/{app}/env/{id}/": {"get", "patch", "delete"},
}
VIEWS = (
    "TeamViewSet",
    "ApiTokenViewSet",
    "AuditEntryViewSet",
    "RegionViewSet",
    "AppViewSet",
    "StageViewSet",
    "EnvVarViewSet",
)


@pytest.fixture
def schema_answer(client, db):
    return client.get("/api/schema/", {"format": "json"})


def test_the_schema_is_a_valid_openapi_document(schema_answer):
    assert schema_answer.status_code == 200
    validate_schema(schema_answer.json())


def test_the_schema_lists_every_path_and_verb(schema_answer):
    paths = schema_answer.json()["paths"]

    for path, methods in PATHS.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))


def test_slug_path_parameters_are_strings(schema_answer):
    paths = schema_answer.json()["paths"]

    for path in ("/api/v1/apps/{app}/", "/api/v1/apps/{app}/stages/{stage}/", "/api/v1/apps/{app}/env/{id}/"):
        for operation in paths[path].values():
            params = {p["name"]: p for p in operation["parameters"] if p["in"] == "path"}
            assert params["app"]["schema"]["type"] == "string"
            if "stage" in params:
                assert params["stage"]["schema"]["type"] == "string"
            if "id" in params:
                assert params["id"]["schema"]["type"] == "integer"


def test_lists_document_the_cursor_and_limit(schema_answer):
    operation = schema_answer.json()["paths"]["/api/v1/apps/{app}/env/"]["get"]

    assert {"cursor", "limit"} <= {p["name"] for p in operation["parameters"]}
    response = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert response.endswith("/PaginatedEnvVarList")


def test_these_views_generate_without_warnings_or_errors(db):
    GENERATOR_STATS.reset()
    GENERATOR_STATS.silence()
    try:
        SchemaGenerator().get_schema(request=None, public=True)
        problems = [
            msg
            for msg in (*GENERATOR_STATS._warn_cache, *GENERATOR_STATS._error_cache)
            if any(v in msg for v in VIEWS)
        ]
        errors = list(GENERATOR_STATS._error_cache)
    finally:
        GENERATOR_STATS.reset()
        GENERATOR_STATS.silent = False
    assert problems == [] and errors == []


def test_the_api_docs_page_loads(client, db):
    answer = client.get("/api/docs/")

    assert answer.status_code == 200
    assert b"swagger" in answer.content.lower()
