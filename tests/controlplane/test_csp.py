"""The Content-Security-Policy: its header on every page, and templates that need nothing inline (the
browser tests in tests/ui/ check that real pages raise no violation)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings

from controlplane.choices import Role
from controlplane.errors import handler500
from tests.factories import MembershipFactory, UserFactory

ROOT = Path(settings.BASE_DIR)
# Served to browsers (e-mail bodies are not: mail clients ignore <link>, so they keep inline styles).
TEMPLATE_DIRS = ["controlplane/templates", "deployments/templates", "regions/templates"]
EMAIL = "controlplane/templates/controlplane/email/"
INLINE = {
    "inline <script>": re.compile(r"<script(?![^>]*\ssrc=)[^>]*>", re.I),
    "<style> block": re.compile(r"<style[\s>]", re.I),
    "style attribute": re.compile(r"\sstyle\s*=", re.I),
    "event handler attribute": re.compile(r"\son[a-z]+\s*=", re.I),
    "javascript: URL": re.compile(r"javascript:", re.I),
}


def _templates():
    for folder in TEMPLATE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.html")):
            if not str(path.relative_to(ROOT)).startswith(EMAIL):
                yield path


def test_no_template_served_to_browsers_needs_anything_inline():
    found = [
        f"{path.relative_to(ROOT)}: {what}"
        for path in _templates()
        for what, pattern in INLINE.items()
        if pattern.search(path.read_text())
    ]
    assert len(list(_templates())) > 15
    assert found == []


def test_the_svg_chart_uses_classes_not_style_attributes():
    source = (ROOT / "regions/history.py").read_text()
    assert "<svg" in source and "style=" not in source


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/login/", "/api/docs/", "/admin/login/"])
def test_pages_carry_the_policy(client, path):
    response = client.get(path)
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
    assert "unsafe-inline" not in policy


@pytest.mark.django_db
def test_signed_in_pages_carry_the_policy(client, team):
    user = UserFactory()
    MembershipFactory(team=team, user=user, role=Role.VIEWER)
    client.force_login(user)
    response = client.get("/")
    assert response.status_code == 200 and "default-src 'self'" in response["Content-Security-Policy"]


@pytest.mark.django_db
def test_the_api_docs_start_up_script_is_a_file(client):
    page = client.get("/api/docs/").content.decode()
    assert "<style" not in page
    assert re.findall(r"<script(?![^>]*\ssrc=)", page) == []
    script = client.get("/api/docs/?script")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()


def test_the_500_page_has_no_inline_style(rf):
    page = handler500(rf.get("/apps/shop/")).content.decode()
    assert "<style" not in page and "controlplane/error.css" in page
