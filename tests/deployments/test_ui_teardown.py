"""The web UI's delete actions: the same service, the same refusal of a live stage or app, and
"take it down first" starting the teardown deployment the API starts."""

from __future__ import annotations

import pytest

from controlplane.choices import Role
from controlplane.models import AuditEntry
from deployments.choices import DeploymentKind
from deployments.models import App, Deployment, Stage
from tests.deployments.ui_support import UI_REGIONS, html, ship
from tests.factories import StageFactory

from . import test_engine_support as support

broker = support.broker  # fixture: the teardown's tasks are recorded, not sent

pytestmark = pytest.mark.django_db


def test_deleting_a_live_stage_asks_to_take_it_down_first_and_refuses_without(browser_for, team, app, broker):
    ship(app)
    browser = browser_for(team, role=Role.ADMIN)

    page = html(browser.get("/apps/shop/stages/production/delete/"))
    assert all(code in page for code in UI_REGIONS) and 'name="force"' in page
    refused = browser.post("/apps/shop/stages/production/delete/", follow=True)

    assert "refused" in html(refused) and "is live in" in html(refused)
    assert Stage.objects.filter(app=app, name="production").exists()
    assert not Deployment.objects.filter(kind=DeploymentKind.TEARDOWN).exists()


def test_take_it_down_first_starts_the_teardown_deployment(
    browser_for, team, app, broker, django_capture_on_commit_callbacks
):
    ship(app)
    browser = browser_for(team, role=Role.ADMIN)

    with django_capture_on_commit_callbacks(execute=True):
        response = browser.post("/apps/shop/stages/production/delete/", {"force": "on"})

    teardown = Deployment.objects.get(kind=DeploymentKind.TEARDOWN)
    assert response.status_code == 302 and response["Location"] == f"/deployments/{teardown.pk}/"
    assert sorted(teardown.regions.values_list("region__code", flat=True)) == sorted(UI_REGIONS)
    assert Stage.objects.get(app=app, name="production").teardown_started_at is not None
    assert broker.pending("workers.start_deployment") == [teardown.pk]
    assert AuditEntry.objects.filter(action="stage.teardown", actor__contains=browser.user.username).exists()


def test_a_stage_that_serves_nowhere_is_deleted_at_once(browser_for, team, app):
    StageFactory(app=app, name="preview")
    browser = browser_for(team, role=Role.ADMIN)

    assert "serves in no region" in html(browser.get("/apps/shop/stages/preview/delete/"))
    response = browser.post("/apps/shop/stages/preview/delete/")

    assert response.status_code == 302
    assert not Stage.objects.filter(app=app, name="preview").exists()
    assert AuditEntry.objects.filter(action="stage.delete").exists()


def test_deleting_a_live_app_from_the_ui_takes_it_down_first(browser_for, team, app, broker):
    ship(app)
    browser = browser_for(team, role=Role.ADMIN)
    refused = browser.post("/apps/shop/delete/", follow=True)
    assert "refused" in html(refused) and App.objects.filter(pk=app.pk).exists()

    browser.post("/apps/shop/delete/", {"force": "on"})

    teardown = Deployment.objects.get(kind=DeploymentKind.TEARDOWN)
    assert teardown.whole_app and App.objects.filter(pk=app.pk).exists()


@pytest.mark.parametrize("role", [Role.VIEWER, Role.DEPLOYER])
def test_only_admins_delete_stages_in_the_ui_as_in_the_api(browser_for, team, app, role):
    ship(app)
    response = browser_for(team, role=role).post("/apps/shop/stages/production/delete/", {"force": "on"})
    assert response.status_code == 403
    assert not Deployment.objects.filter(kind=DeploymentKind.TEARDOWN).exists()
