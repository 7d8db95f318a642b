"""Every operation of the OpenAPI schema, fuzzed with schemathesis against the app in-process.

For an admin's and a viewer's token, against a seeded app (team, app in two regions, a stage, two
releases, a deployment with its log, env vars, an alert channel with deliveries, an OIDC policy),
schemathesis sends valid and invalid requests to every operation and fails on any 5xx, any status
the schema does not document, any body that does not match its schema, a wrong content type, and
any invalid request that is not refused with a 4xx. AWS is moto in-process; deployments are
enqueued only on commit, which a test's transaction never reaches, so nothing waits for a worker.

Bounded: a fixed seed and a few examples per phase keep the run deterministic and to about a
minute and a half on a loaded two-core machine.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, settings
from moto import mock_aws
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import negative_data_rejection

from controlplane.choices import Role
from controlplane.models import AuditEntry, Channel, Notification, NotificationAttempt
from deployments.models import (
    Artifact,
    Deployment,
    DeploymentEvent,
    OidcTrustPolicy,
    RegionDeployment,
    Release,
)
from regions.models import Incident, StagePlacement
from tests.factories import (
    ApiTokenFactory,
    AppFactory,
    AppRegionFactory,
    EnvVarFactory,
    RegionFactory,
    StageFactory,
    TeamFactory,
)

# Every seeded object addressed by id has this one (a different table each), so the fixed path
# parameters below reach a real object on SQLite and PostgreSQL alike.
ID = 900_001

CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 20261202,
        "generation": {"mode": "all", "max-examples": 2, "deterministic": True, "no-shrink": True},
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
        "checks": {
            "not_a_server_error": {"enabled": True},
            "status_code_conformance": {"enabled": True},
            "content_type_conformance": {"enabled": True},
            "response_headers_conformance": {"enabled": True},
            "response_schema_conformance": {"enabled": True},
            "negative_data_rejection": {"enabled": True},
            "missing_required_header": {"enabled": True},
            "unsupported_method": {"enabled": True},
            # Valid by the schema is not always valid by the rules (an unknown region code, a
            # stage that already exists): those are 400s by design, which this check counts as bugs.
            "positive_data_acceptance": {"enabled": False},
        },
        # Every path reaches a seeded object.
        "parameters": {
            "path.app": "shop",
            "path.stage": "production",
            "path.code": "us-east-1",
            "path.id": ID,
        },
    }
)

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application(), config=CONFIG)


def seed_world() -> None:
    team = TeamFactory(slug="acme")
    regions = [RegionFactory(code=code) for code in ("us-east-1", "eu-west-1")]
    app = AppFactory(team=team, slug="shop", repo_url="https://git.example.com/acme/shop.git")
    placements = [AppRegionFactory(app=app, region=region) for region in regions]
    stage = StageFactory(id=ID, app=app, name="production", domain="shop.example.com")
    StageFactory(app=app, name="staging", branch="develop")
    EnvVarFactory(id=ID, app=app, key="GREETING", value="hello")
    EnvVarFactory(app=app, key="DB_PASSWORD", value="s3cret", secret=True, region=regions[1])
    artifact = Artifact.objects.create(id=ID, app=app, sha256="c" * 64, size=100)
    first = Release.objects.create(id=ID, app=app, stage=stage, number=1, artifact=artifact)
    second = Release.objects.create(
        app=app, stage=stage, number=2, artifact=artifact, source_release=first, commit_sha="a" * 40
    )
    deployment = Deployment.objects.create(
        id=ID, app=app, stage=stage, release=second, previous_release=first, triggered_by="api:ci", last_seq=2
    )
    RegionDeployment.objects.create(deployment=deployment, region=regions[0], version="3")
    DeploymentEvent.objects.create(deployment=deployment, region=regions[0], seq=1, message="Published 3")
    DeploymentEvent.objects.create(deployment=deployment, seq=2, message="Done")
    sp = StagePlacement.objects.create(placement=placements[0], stage=stage, version="3", release=second)
    Incident.objects.create(stage_placement=sp, reason="timeouts", closed_at=timezone.now())
    channel = Channel.objects.create(id=ID, team=team, kind="email", name="ops", target="ops@example.com")
    with_app = Notification.objects.create(channel=channel, event="test", app=app, payload={"title": "hi"})
    NotificationAttempt.objects.create(notification=with_app, number=1, status="sent", response_code=250)
    Notification.objects.create(channel=channel, event="test", app=None, payload={})
    OidcTrustPolicy.objects.create(id=ID, app=app, repository="acme/shop", ref="main")
    AuditEntry.objects.create(team=team, actor="api:ci", action="app.create", object_type="app")
    ApiTokenFactory(id=ID, team=team, name="ci", role=Role.DEPLOYER)


@pytest.fixture(scope="module")
def fake_aws():
    """Operations that call AWS (a region's readiness check, rollback planning) reach moto."""
    with mock_aws():
        yield


@pytest.fixture(params=[Role.ADMIN, Role.VIEWER])
def token(request, db, fake_aws, monkeypatch):
    # The seeded deployment is still running, so every ``?wait=`` the fuzzer sends to its log
    # would hold the request for up to 30 s (the long-poll's cap): a short cap keeps the run
    # bounded and still goes through the waiting path (tests/deployments/test_api_events.py
    # covers what a wait answers).
    monkeypatch.setattr("deployments.events.LONG_POLL_MAX_S", 0.2)
    # As Django's test client does: a request's end must not close the test's database connection.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        seed_world()
        yield ApiTokenFactory(team=TeamFactory(slug="acme"), role=request.param).raw
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_keeps_the_contract(case, token):
    excluded = []
    negated = {loc for loc in ParameterLocation if case.meta and case.meta.is_negative_at(loc)}
    if negated == {ParameterLocation.PATH}:
        # The path's invalid value was replaced by a seeded object's: the request sent is valid.
        excluded.append(negative_data_rejection)
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, excluded_checks=excluded)
