"""The team web UI in a real browser (headless chromium): sign in, create an app and a stage,
upload and deploy while the log follows live, roll back to a chosen release, edit a secret env
var, what a viewer sees, 390 px wide pages, the Content-Security-Policy on every page (the API docs
and the Django admin too), and no console errors or CSP violations anywhere."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from controlplane.choices import Role
from deployments.choices import DeploymentKind, DeploymentStatus
from deployments.models import App, Deployment, EnvVar, Stage
from regions.models import Probe, StagePlacement
from tests.deployments.ui_support import ship
from tests.factories import (
    AppFactory,
    AppRegionFactory,
    EnvVarFactory,
    MembershipFactory,
    RegionFactory,
    StageFactory,
    UserFactory,
)
from tests.support.deploys import make_zip

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

REGIONS = ["eu-west-1", "us-east-1"]


def member(team, role: str, username: str):
    user = UserFactory(username=username, first_name=username.title())
    MembershipFactory(team=team, user=user, role=role)
    return user


@pytest.fixture
def shop(team):
    app = AppFactory(team=team, slug="shop", name="Shop", runtime="python3.12", handler="app.handler")
    for code in REGIONS:
        AppRegionFactory(app=app, region=RegionFactory(code=code))
    StageFactory(app=app, name="production")
    EnvVarFactory(app=app, key="GREETING", value="hello")
    return app


def test_an_admin_signs_in_creates_an_app_and_a_stage(open_browser, team):
    for code in REGIONS:
        RegionFactory(code=code)
    page = open_browser(member(team, Role.ADMIN, "ada"))
    page.click("text=New app")
    page.fill("input[name=slug]", "billing")
    page.check("input[name=regions][value=eu-west-1]")
    page.check("input[name=regions][value=us-east-1]")
    page.click("button:has-text('Create app')")
    page.wait_for_url(re.compile(r"/apps/billing/"))
    page.click("text=Add a stage")
    page.fill("input[name=name]", "production")
    page.fill("textarea[name=waves]", "mars-north-1")
    page.click("button:has-text('Add stage')")
    expect(page.locator(".flash-error, .errorlist").first).to_contain_text("not one of the app")
    page.fill("textarea[name=waves]", "eu-west-1\n*")
    page.click("button:has-text('Add stage')")
    expect(page.locator("article.stage[data-stage=production]")).to_be_visible()
    app = App.objects.get(slug="billing")
    assert Stage.objects.get(app=app, name="production").rollout == {"waves": [["eu-west-1"], ["*"]]}


def test_upload_deploy_follow_the_log_live_then_roll_back_to_a_chosen_release(
    open_browser, team, shop, aws, worker_process, tmp_path
):
    page = open_browser(member(team, Role.DEPLOYER, "grace"))
    page.goto("/apps/shop/")
    page.on("dialog", lambda dialog: dialog.accept())
    for n in (1, 2):
        zip_path = tmp_path / f"build{n}.zip"
        zip_path.write_bytes(
            make_zip(f"def handler(event, context):\n    return {{'statusCode': 200, 'body': '{n}'}}\n")
        )
        page.goto("/apps/shop/")
        page.set_input_files("input[name=file]", str(zip_path))
        page.fill("input[name=commit_message]", f"Build {n}")
        page.click("button:has-text('Upload and deploy')")
        page.wait_for_url(re.compile(r"/deployments/\d+/"))
        # The page was opened while queued: the live updates fill status, times and the log.
        expect(page.locator("#deployment-status")).to_have_text("Succeeded", timeout=20000)
        expect(page.locator("#deployment-started time")).to_be_visible()
        expect(page.locator("#deployment-finished time")).to_be_visible()
        expect(page.locator("#live-indicator")).to_have_count(0)
        for code in REGIONS:
            expect(page.locator(f'#regions tr[data-region="{code}"] [data-field=status]')).to_have_text(
                "Succeeded"
            )
        lines = page.locator("#log-lines tr")
        assert lines.count() > 5
        seqs = [int(s) for s in lines.evaluate_all("rows => rows.map(r => r.dataset.seq)")]
        assert seqs == sorted(seqs)
        page.select_option("#log-region", "us-east-1")
        assert page.locator("#log-lines tr:not(.hidden-by-filter)").count() < lines.count()
    first = Deployment.objects.filter(app=shop).order_by("id").first()

    page.goto("/apps/shop/")
    expect(page.locator('[data-testid="current-release"]')).to_have_text("#2")
    page.locator('tr[data-release="1"] button:has-text("Roll back to this")').click()
    page.wait_for_url(re.compile(r"/deployments/\d+/"))
    expect(page.locator("#deployment-status")).to_have_text("Succeeded", timeout=20000)
    rollback = Deployment.objects.get(app=shop, kind=DeploymentKind.ROLLBACK)
    assert rollback.status == DeploymentStatus.SUCCEEDED and rollback.release_id == first.release_id
    page.goto("/apps/shop/")
    expect(page.locator('[data-testid="current-release"]')).to_have_text("#1")


def test_a_secret_env_var_is_edited_and_never_reaches_the_page_source(open_browser, team, shop):
    page = open_browser(member(team, Role.DEPLOYER, "linus"))
    page.goto("/apps/shop/env/")
    form = page.locator("form:has(h3:has-text('Add a variable'))")
    form.locator("input[name=key]").fill("API_TOKEN")
    form.locator("textarea[name=value]").fill("first-secret-4711")
    form.locator("input[name=secret]").check()
    form.locator("select[name=stage]").select_option("production")
    form.locator("button[type=submit]").click()
    expect(page.locator("tr[data-env=API_TOKEN]")).to_contain_text("secret")
    page.locator("tr[data-env=API_TOKEN] >> text=Edit").click()
    assert "first-secret-4711" not in page.content()
    page.fill("textarea[name=value]", "second-secret-0815")
    page.click("button:has-text('Save')")
    expect(page.locator(".flash-success")).to_contain_text("API_TOKEN saved")
    assert EnvVar.objects.get(app=shop, key="API_TOKEN").value == "second-secret-0815"
    for path in ("/apps/shop/env/", f"/apps/shop/env/{EnvVar.objects.get(key='API_TOKEN').pk}/"):
        page.goto(path)
        source = page.content()
        assert "second-secret-0815" not in source and "first-secret-4711" not in source


def test_a_viewer_sees_no_buttons_and_every_main_page_fits_390px(open_browser, console_errors, team, shop):
    viewer = member(team, Role.VIEWER, "vera")
    deployment = ship(
        shop, message="A commit title long enough to wrap on a phone screen, and then some more"
    )
    page = open_browser(viewer, width=390, height=844)
    assert page.goto("/apps/new/").status == 403
    assert page.goto("/no/such/page/").status == 404
    console_errors.clear()  # chromium reports those two answers as console errors; they were expected
    paths = [
        "/", "/apps/shop/", "/apps/shop/env/", "/apps/shop/deployments/", "/apps/shop/health/",
        f"/deployments/{deployment.pk}/",
        "/team/channels/", "/team/audit/",
    ]  # fmt: skip
    for path in paths:
        page.goto(path)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at 390px"
        buttons = page.locator("main button, main .btn-primary, main .btn-danger")
        texts = [t.strip() for t in buttons.all_inner_texts()]
        assert not [t for t in texts if t not in ("Filter",)], f"{path} shows {texts} to a viewer"


def _probe_history(app) -> None:
    """An hour of probes of the app's us-east-1 placement, the last three failed: a chart with a
    line and failure bars on the health page."""
    sp = StagePlacement.objects.get(stage__app=app, placement__region__code="us-east-1")
    now = timezone.now()
    Probe.objects.bulk_create(
        Probe(
            stage_placement=sp, ok=i >= 3, status_code=200 if i >= 3 else None, latency_ms=40.0 + i % 5,
            error="" if i >= 3 else "timed out", created_at=now - timedelta(minutes=i, seconds=1),
        )
        for i in range(60)
    )  # fmt: skip


def test_every_page_keeps_the_content_security_policy(open_browser, console_errors, team, shop):
    admin = member(team, Role.ADMIN, "root")
    admin.is_staff = admin.is_superuser = True
    admin.save()
    deployment = ship(shop)
    _probe_history(shop)
    env = EnvVar.objects.get(app=shop, key="GREETING")
    page = open_browser(admin)  # the login page was the first under the policy
    paths = [
        "/", "/apps/new/", "/apps/shop/", "/apps/shop/env/", f"/apps/shop/env/{env.pk}/",
        "/apps/shop/deployments/", "/apps/shop/health/", "/apps/shop/stages/new/",
        "/apps/shop/stages/production/", f"/deployments/{deployment.pk}/",
        "/team/channels/", "/team/audit/", "/team/tokens/",
        "/api/docs/",
        "/admin/", "/admin/deployments/app/", f"/admin/deployments/app/{shop.pk}/change/",
        "/admin/deployments/app/add/", "/admin/deployments/envvar/", "/admin/auth/user/",
    ]  # fmt: skip
    for path in paths:
        response = page.goto(path)
        assert response.status == 200, path
        policy = response.headers["content-security-policy"]
        for directive in (
            "default-src 'self'", "script-src 'self'", "style-src 'self'", "object-src 'none'",
            "base-uri 'self'", "form-action 'self'", "frame-ancestors 'none'",
        ):  # fmt: skip
            assert directive in policy, f"{path}: {policy}"
        assert "unsafe-inline" not in policy, f"{path}: {policy}"
        if path == "/apps/shop/health/":
            expect(page.locator("svg.chart polyline").first).to_be_visible()
            expect(page.locator("svg.chart rect.fail").first).to_be_attached()
        if path.startswith("/deployments/"):
            expect(page.locator("#log-lines tr").first).to_be_visible()
            page.select_option("#log-level", "error")  # the filters run from ui.js: info lines hide
            expect(page.locator("#log-lines tr:not(.hidden-by-filter)")).to_have_count(0)
        if path == "/api/docs/":
            # Swagger UI rendered the operations: its start-up script (a file) ran under the policy.
            expect(page.locator(".opblock").first).to_be_visible(timeout=30000)
        assert console_errors.csp_violations == [], path

    # The listener does see a violation: an injected inline handler is blocked and reported.
    page.goto("/apps/shop/")
    with page.expect_console_message(lambda msg: "CSP violation" in msg.text):
        page.evaluate(
            """document.body.insertAdjacentHTML("beforeend",
            '<img src="/static/deployments/favicon.svg" onload="window.injected = 1">')"""
        )
    assert page.evaluate("window.injected") is None
    assert any("script-src" in v for v in console_errors.csp_violations), console_errors
    console_errors.clear()
