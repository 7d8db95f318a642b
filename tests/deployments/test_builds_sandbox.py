"""Builds run in the sandbox: a build command written by an attacker with push access finds nothing
of the control plane, cannot exhaust the worker, and reaches only public addresses."""

from __future__ import annotations

import zipfile

import pytest

from controlplane.choices import Role
from deployments import artifacts
from deployments.builds import BuildFailed, build_artifact
from deployments.choices import DeploymentStatus
from deployments.engine.build import build_release
from deployments.models import Deployment, RegionDeployment
from tests.deployments.test_builds import Log
from tests.factories import AppFactory, RegionFactory, StageFactory
from tests.support.gitrepo import DumbHttpGitServer, GitRepo
from tests.support.textserver import TextServer

pytestmark = pytest.mark.django_db

HANDLER = "def handler(event, context):\n    return {'statusCode': 200, 'body': 'v1'}\n"
PUBLIC_STAND_IN = "127.0.0.2"  # treated as public through SANDBOX_TREAT_AS_PUBLIC in these tests


@pytest.fixture
def repo(tmp_path) -> GitRepo:
    return GitRepo(tmp_path / "git")


@pytest.fixture
def app(team, repo):
    return AppFactory(team=team, slug="shop", repo_url=repo.url, runtime="python3.12", handler="app.handler")


@pytest.fixture(scope="module")
def public_site():
    server = TextServer(PUBLIC_STAND_IN, b"left-pad@1.3.0")
    yield server.url
    server.close()


def deployment_of(app, sha: str) -> Deployment:
    """A queued deployment of ``sha`` to one region, as a push makes it."""
    stage = StageFactory(app=app, name="production", branch="main")
    deployment = Deployment.objects.create(
        app=app, stage=stage, ref=sha, commit_sha=sha, triggered_by="webhook:github"
    )
    RegionDeployment.objects.create(deployment=deployment, region=RegionFactory(code="eu-west-1"))
    return deployment


def test_a_fork_bomb_fails_the_deployment_with_the_reason(app, repo, settings):
    settings.BUILD_PROCESSES = 64
    sha = repo.commit({"app.py": HANDLER}, "Bomb")
    app.build_command = ":(){ :|:& };:; sleep 60"
    app.save()
    deployment = deployment_of(app, sha)

    assert build_release(deployment) is False

    deployment.refresh_from_db()
    assert deployment.status == DeploymentStatus.FAILED
    reason = "it reached its limit of 64 processes and threads (a fork bomb?)."
    assert deployment.error.startswith(f"Build failed: The build was stopped: {reason}")
    assert deployment.events.filter(level="error", message__contains="limit of 64 processes").exists()


def test_a_memory_hog_fails_the_deployment_with_the_reason(app, repo, settings):
    settings.BUILD_MEMORY_MB = 200
    sha = repo.commit({"app.py": HANDLER}, "Hog")
    app.build_command = "python3 -c \"x = []\nwhile True: x.append(b'x' * (8 << 20))\""
    app.save()
    deployment = deployment_of(app, sha)

    assert build_release(deployment) is False

    deployment.refresh_from_db()
    assert deployment.status == DeploymentStatus.FAILED
    assert "The build was stopped: it used more than its 200 MB memory limit." in deployment.error


def test_a_build_reaches_public_addresses_through_the_proxy_but_not_loopback(
    app, repo, settings, public_site
):
    settings.SANDBOX_TREAT_AS_PUBLIC = [f"{PUBLIC_STAND_IN}/32"]
    loopback = TextServer("127.0.0.1", b"control-plane-content")
    control_plane = f"{loopback.url}/"
    sha = repo.commit({"app.py": HANDLER}, "Fetch")
    app.build_command = (
        f"mkdir -p dist && cp app.py dist/ && curl -sSf -m 10 {public_site}/left-pad > dist/vendored.txt && "
        f"(curl -sS -m 5 {control_plane} || curl -sS -m 5 --noproxy '' {control_plane}"
        f" || echo 'control plane unreachable')"
    )
    app.build_output_dir = "dist"
    app.save()

    log = Log()
    try:
        artifact = build_artifact(app=app, sha=sha, emit=log)
    finally:
        loopback.close()

    assert "control plane unreachable" in log.text
    assert ("warning", f"The sandbox refused a connection to 127.0.0.1:{loopback.port}: "
            "127.0.0.1 is a loopback address.") in log.lines  # fmt: skip
    with zipfile.ZipFile(artifacts.artifact_path(artifact)) as zf:
        assert zf.read("vendored.txt") == b"left-pad@1.3.0"


def test_a_build_without_network_reaches_nothing(app, repo, settings, public_site):
    settings.SANDBOX_TREAT_AS_PUBLIC = [f"{PUBLIC_STAND_IN}/32"]
    sha = repo.commit({"app.py": HANDLER}, "Offline")
    app.build_command = f"curl -sS -m 5 {public_site}/left-pad; env | grep -ci proxy"
    app.build_network = False
    app.save()

    with pytest.raises(BuildFailed) as failure:
        build_artifact(app=app, sha=sha, emit=Log())

    assert "left-pad@1.3.0" not in failure.value.detail
    assert "Failed to connect" in failure.value.detail and failure.value.detail.endswith("\n0")


def test_the_git_credential_is_never_visible_to_the_build(app, repo):
    token = "s3cret-deploy-token"
    repo.commit({"app.py": HANDLER}, "First")
    sha = repo.commit({"app.py": HANDLER + "# two\n"}, "Second")
    server = DumbHttpGitServer(repo, username="deploy", password=token).start()
    # The build hunts for the token (a pattern its own command lines do not match).
    needle = "'s3cret-deplo[y]-token'"
    app.repo_url = server.url
    app.git_credential = f"deploy:{token}"
    app.build_command = (
        f'for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do tr "\\0" "\\n" < $f; done'
        f" | grep -c {needle};"
        f"grep -rsl {needle} /build /home /tmp /run /etc; env | grep -c {needle};"
        f"git -C /build config --list | grep -ci -e askpass -e credential -e deploy;"
        f"curl -sS -m 5 {server.url}/info/refs 2>&1 | head -1; echo hunt-done"
    )
    app.save()

    log = Log()
    try:
        build_artifact(app=app, sha=sha, emit=log)
    finally:
        server.stop()

    assert token not in log.text
    output = log.text[log.text.index("In the build sandbox") :].splitlines()[1:]
    assert output[:3] == ["0", "0", "0"], output  # no environ, file, env or git config holds it
    assert "hunt-done" in output
    assert server.seen_authorization and all(  # only the fetch, outside the sandbox, reached it
        a == server.expected for a in server.seen_authorization if a
    )


def test_an_admin_turns_an_apps_build_network_off_through_the_api(app, api_for):
    client = api_for(app.team, role=Role.ADMIN)
    assert client.get(f"/api/v1/apps/{app.slug}/").json()["build_network"] is True

    response = client.patch(f"/api/v1/apps/{app.slug}/", {"build_network": False}, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["build_network"] is False
    app.refresh_from_db()
    assert app.build_network is False
