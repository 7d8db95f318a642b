"""Rollback, promotion and pinning through the API and a real worker on a moto server; AWS state
checked with boto3."""

from __future__ import annotations

import base64

import pytest
from django.test import Client

from controlplane.choices import Role
from deployments.choices import DeploymentStatus
from deployments.models import Deployment
from tests.support.deploys import boto, deploy, make_zip, upload, wait_finished
from tests.support.gitrepo import GitRepo, body_of, github_headers, github_push

from .conftest import REGIONS

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

V1_SHA, V2_SHA = "1" * 40, "2" * 40
HANDLER = "def handler(event, context):\n    return {'statusCode': 200, 'body': '%s'}\n"


def git_push(app, repo, sha: str, before: str = "0" * 40) -> dict:
    """A signed GitHub push delivery of ``sha`` on main; the hook's JSON answer."""
    body = body_of(github_push(repo, after=sha, before=before))
    response = Client().post(
        "/api/v1/hooks/github/", data=body, content_type="application/json",
        headers=github_headers(app.webhook_secret, body),
    )  # fmt: skip
    assert response.status_code in (200, 202), response.json()
    return response.json()


def alias_versions(aws, app, stage="production") -> dict[str, str]:
    return {
        code: boto("lambda", code, aws).get_alias(FunctionName=app.function_name, Name=stage)[
            "FunctionVersion"
        ]
        for code in REGIONS
    }


def version_env(aws, app, code, version) -> dict:
    config = boto("lambda", code, aws).get_function_configuration(
        FunctionName=app.function_name, Qualifier=version
    )
    return config["Environment"]["Variables"]


@pytest.fixture
def deployed_v1_v2(app_3_regions, api_for, team, aws, worker_process):
    """v1 then v2 of production in 3 regions; v2 changed an env var."""
    app = app_3_regions
    client = api_for(team, role=Role.DEPLOYER)
    first = wait_finished(
        deploy(client, app, "production", upload(client, app, make_zip()), sha=V1_SHA)["id"]
    )
    assert first.status == DeploymentStatus.SUCCEEDED
    env = app.env_vars.get(key="GREETING", region__isnull=True)
    response = client.patch(f"/api/v1/apps/{app.slug}/env/{env.pk}/", {"value": "howdy"}, format="json")
    assert response.status_code == 200, response.json()
    v2_zip = make_zip("def handler(e, c): return 2\n")
    second = wait_finished(deploy(client, app, "production", upload(client, app, v2_zip), sha=V2_SHA)["id"])
    assert second.status == DeploymentStatus.SUCCEEDED
    assert alias_versions(aws, app) == dict.fromkeys(REGIONS, "2")
    return app, client, first, second


def test_rollback_moves_alias_back_in_every_region_with_v1_env(deployed_v1_v2, aws):
    app, client, first, second = deployed_v1_v2
    answer = client.post(f"/api/v1/apps/{app.slug}/rollback/", {"stage": "production"}, format="json")
    assert answer.status_code == 202, answer.json()
    assert answer.json()["kind"] == "rollback"
    rolled = wait_finished(answer.json()["id"])
    assert rolled.status == DeploymentStatus.SUCCEEDED
    assert rolled.release_id == first.release_id
    assert alias_versions(aws, app) == dict.fromkeys(REGIONS, "1")
    for code in REGIONS:
        env = version_env(aws, app, code, "1")
        assert env["GREETING"] == ("bonjour" if code == "eu-west-1" else "hello")  # v1's, not "howdy"
        versions = boto("lambda", code, aws).list_versions_by_function(FunctionName=app.function_name)
        assert [v["Version"] for v in versions["Versions"]] == ["$LATEST", "1", "2"]  # nothing published
    stage = app.stages.get(name="production")
    assert stage.pinned and "release #1" in stage.pinned_reason

    # Roll back the rollback: back to v2 everywhere.
    again = client.post(f"/api/v1/apps/{app.slug}/rollback/", {"stage": "production"}, format="json")
    assert again.status_code == 202, again.json()
    assert wait_finished(again.json()["id"]).status == DeploymentStatus.SUCCEEDED
    assert alias_versions(aws, app) == dict.fromkeys(REGIONS, "2")


def test_rollback_of_one_region_only_touches_that_region(deployed_v1_v2, aws):
    app, client, first, second = deployed_v1_v2
    answer = client.post(
        f"/api/v1/apps/{app.slug}/rollback/",
        {"stage": "production", "to": f"deployment:{first.pk}", "regions": ["eu-west-1"]},
        format="json",
    )
    assert answer.status_code == 202, answer.json()
    assert [r["region"] for r in answer.json()["regions"]] == ["eu-west-1"]
    wait_finished(answer.json()["id"])
    assert alias_versions(aws, app) == {"us-east-1": "2", "eu-west-1": "1", "ap-southeast-2": "2"}


def test_rollback_to_a_pruned_version_is_refused_and_moves_nothing(deployed_v1_v2, aws):
    app, client, first, second = deployed_v1_v2
    boto("lambda", "ap-southeast-2", aws).delete_function(FunctionName=app.function_name, Qualifier="1")
    answer = client.post(f"/api/v1/apps/{app.slug}/rollback/", {"stage": "production"}, format="json")
    assert answer.status_code == 409
    body = answer.json()
    assert body["code"] == "rollback_target_missing" and body["regions"] == ["ap-southeast-2"]
    assert "ap-southeast-2" in body["detail"]
    assert alias_versions(aws, app) == dict.fromkeys(REGIONS, "2")
    assert not Deployment.objects.filter(app=app, kind="rollback").exists()
    assert not app.stages.get(name="production").pinned


def test_promote_staging_to_production_ships_staging_code_with_production_env(
    app_3_regions, api_for, team, aws, worker_process
):
    app = app_3_regions
    client = api_for(team, role=Role.DEPLOYER)
    staged = deploy(client, app, "staging", upload(client, app, make_zip("def handler(e, c): return 's'\n")),
                    sha=V2_SHA)  # fmt: skip
    assert wait_finished(staged["id"]).status == DeploymentStatus.SUCCEEDED
    puts_before = aws_puts(aws)
    answer = client.post(
        f"/api/v1/apps/{app.slug}/promote/",
        {"from_stage": "staging", "to_stage": "production"},
        format="json",
    )
    assert answer.status_code == 202, answer.json()
    assert answer.json()["kind"] == "promote"
    promoted = wait_finished(answer.json()["id"])
    assert promoted.status == DeploymentStatus.SUCCEEDED
    assert promoted.release.artifact_id == Deployment.objects.get(pk=staged["id"]).release.artifact_id
    assert promoted.commit_sha == V2_SHA
    for code in REGIONS:
        lam = boto("lambda", code, aws)
        prod = lam.get_alias(FunctionName=app.function_name, Name="production")["FunctionVersion"]
        stag = lam.get_alias(FunctionName=app.function_name, Name="staging")["FunctionVersion"]
        config = lam.get_function_configuration(FunctionName=app.function_name, Qualifier=prod)
        assert (
            config["CodeSha256"]
            == lam.get_function_configuration(FunctionName=app.function_name, Qualifier=stag)["CodeSha256"]
        )
        assert config["Environment"]["Variables"]["STAGE_NAME"] == "production"
    assert aws_puts(aws) == puts_before  # the artifact was already in every bucket


def aws_puts(aws) -> int:
    """How many artifact objects the region buckets hold."""
    total = 0
    for code in REGIONS:
        s3 = boto("s3", code, aws)
        for bucket in s3.list_buckets()["Buckets"]:
            total += s3.list_objects_v2(Bucket=bucket["Name"]).get("KeyCount", 0)
    return total


def test_push_to_a_pinned_stage_starts_nothing_until_unpinned(deployed_v1_v2, aws, tmp_path):
    app, client, first, second = deployed_v1_v2
    repo = GitRepo(tmp_path / "git")
    app.repo_url = repo.url
    app.save()
    app.stages.filter(name="production").update(branch="main")
    rolled = client.post(f"/api/v1/apps/{app.slug}/rollback/", {"stage": "production"}, format="json").json()
    assert wait_finished(rolled["id"]).status == DeploymentStatus.SUCCEEDED

    pushed = repo.commit({"app.py": HANDLER % "v3"}, "Third")
    answer = git_push(app, repo, pushed)
    assert answer["code"] == "pinned", answer
    recorded = Deployment.objects.get(pk=answer["deployments"][0]["deployment"])
    assert recorded.status == DeploymentStatus.CANCELLED and recorded.commit_sha == pushed
    assert "pinned" in recorded.events.get(step="queue").message
    assert alias_versions(aws, app) == dict.fromkeys(REGIONS, "1")

    manual = client.post(
        f"/api/v1/apps/{app.slug}/deployments/",
        {"stage": "production", "artifact": second.release.artifact_id},
        format="json",
    )
    assert manual.status_code == 409 and manual.json()["code"] == "stage_pinned"

    unpin = client.patch(f"/api/v1/apps/{app.slug}/stages/production/", {"pinned": False}, format="json")
    assert unpin.status_code == 200, unpin.json()
    assert unpin.json()["pinned"] is False
    again = repo.commit({"app.py": HANDLER % "v4"}, "Fourth")
    answer = git_push(app, repo, again, before=pushed)
    assert answer["code"] == "accepted", answer
    deployed = wait_finished(answer["deployments"][0]["deployment"], timeout=120)
    assert deployed.status == DeploymentStatus.SUCCEEDED, deployed.error
    assert deployed.commit_sha == again
    assert alias_versions(aws, app) == dict.fromkeys(REGIONS, "3")
    code_sha = deployed.release.artifact.sha256
    for code in REGIONS:
        config = boto("lambda", code, aws).get_function_configuration(
            FunctionName=app.function_name, Qualifier="3"
        )
        assert base64.b64decode(config["CodeSha256"]).hex() == code_sha


def test_release_history_and_diff_show_commits_and_env_keys_without_values(deployed_v1_v2):
    app, client, first, second = deployed_v1_v2
    app.repo_url = "git@github.com:acme/shop.git"
    app.save()
    releases = client.get(f"/api/v1/apps/{app.slug}/releases/?stage=production").json()["results"]
    assert [r["commit"]["sha"] for r in releases] == [V2_SHA, V1_SHA]
    assert sorted(releases[0]["live_in"]) == sorted(REGIONS)
    diff = client.get(f"/api/v1/releases/{second.release_id}/diff/?against={first.release_id}").json()
    assert diff["commits"]["compare_url"] == f"https://github.com/acme/shop/compare/{V1_SHA}...{V2_SHA}"
    assert diff["env"]["changed"] == ["GREETING"] and diff["env"]["added"] == []
    assert "howdy" not in str(diff) and "s3cr3t-value" not in str(diff)
    assert diff["artifact"]["changed"] is True
    listed = client.get(f"/api/v1/apps/{app.slug}/deployments/?sha={V1_SHA[:7]}").json()["results"]
    assert [d["id"] for d in listed] == [first.pk]
    assert client.get(f"/api/v1/deployments/{second.pk}/").json()["commit"]["replaced_sha"] == V1_SHA
