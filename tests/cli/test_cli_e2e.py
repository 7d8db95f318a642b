"""Every exit code a user can hit, from the real command against a real stack: the web server
(pytest-django's live server), a Celery worker subprocess, moto, and local servers standing in
for the regions' health endpoints (ENDPOINT_OVERRIDES, so success and failure are chosen)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading

import pytest

from controlplane.choices import Role
from deployments.choices import DeploymentStatus
from deployments.models import Deployment, EnvVar
from tests.factories import ApiTokenFactory, AppFactory, AppRegionFactory, RegionFactory, StageFactory
from tests.support.deploys import boto, wait_finished

from .conftest import ROOT, cli_argv, run_cli

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

REGIONS = ["us-east-1", "eu-west-1"]


@pytest.fixture
def shop(team, aws):
    app = AppFactory(team=team, slug="shop", runtime="python3.12", handler="app.handler")
    for code in REGIONS:
        AppRegionFactory(app=app, region=RegionFactory(code=code))
    StageFactory(app=app, name="production")
    return app


@pytest.fixture
def reaper(settings):
    """Beat's reaper, as the real stack runs it (every second here, resending what waited 10 s):
    a task message lost on a busy machine delays a test instead of failing it."""
    from django.db import connection

    from deployments.engine.reaper import reap

    settings.REQUEUE_AFTER = 10
    stop = threading.Event()

    def loop():
        try:
            while not stop.wait(1.0):
                try:
                    reap()
                except Exception:  # noqa: BLE001, S110 - the next round tries again, as beat's would
                    pass
        finally:
            connection.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=30)


@pytest.fixture
def stack(live_server, worker_process, region_endpoints, cli_env_for, team, reaper):
    """The environment of a CLI run by a deployer of the team, against the running stack."""
    token = ApiTokenFactory(team=team, role=Role.DEPLOYER)
    return cli_env_for(live_server.url, token.raw)


def git(path, *args):
    subprocess.run(["git", "-C", str(path), *args], check=True, capture_output=True)


@pytest.fixture
def source(tmp_path):
    """A working tree with a handler and one commit."""
    (tmp_path / "app.py").write_text("def handler(event, context):\n    return {'statusCode': 200}\n")
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "add", ".")
    git(
        tmp_path,
        "-c",
        "user.name=Ada",
        "-c",
        "user.email=ada@example.com",
        "commit",
        "-q",
        "-m",
        "Add the shop",
    )
    return tmp_path


def head(path) -> str:
    return subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()


def test_exit_0_deploy_succeeds_with_the_working_tree_commit_and_rollback_reports_json(
    shop, stack, source, aws
):
    done = run_cli("deploy", str(source), "--app", "shop", "--stage", "production", env=stack)
    assert done.returncode == 0, done.stderr
    deployment = Deployment.objects.get(app=shop)
    assert deployment.status == DeploymentStatus.SUCCEEDED
    assert (deployment.commit_sha, deployment.commit_message) == (head(source), "Add the shop")
    # Plain timestamped lines (stdout is not a terminal), then each region's outcome.
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"deployment {deployment.pk} of shop production: ")
    assert any("[us-east-1] alias:" in line for line in lines)
    assert (
        "  eu-west-1: succeeded version 1" in lines and lines[-1] == f"deployment {deployment.pk} succeeded"
    )
    for code in REGIONS:
        alias = boto("lambda", code, aws).get_alias(FunctionName=shop.function_name, Name="production")
        assert alias["FunctionVersion"] == "1"

    (source / "app.py").write_text("def handler(event, context):\n    return {'statusCode': 201}\n")
    assert run_cli("deploy", str(source), "--app", "shop", "--stage", "production", env=stack).returncode == 0
    back = run_cli("rollback", "--app", "shop", "--stage", "production", "--json", env=stack)
    assert back.returncode == 0, back.stderr
    answer = json.loads(back.stdout)  # one JSON object, nothing else on stdout
    assert (answer["kind"], answer["status"], answer["exit_code"]) == ("rollback", "succeeded", 0)
    assert {r["region"]: r["version"] for r in answer["regions"]} == dict.fromkeys(REGIONS, "1")


def test_exit_1_when_every_region_fails_its_health_check(shop, stack, source, region_endpoints):
    region_endpoints.failing.update(REGIONS)
    done = run_cli("deploy", str(source), "--app", "shop", "--stage", "production", "--json", env=stack)
    assert done.returncode == 1, done.stderr
    answer = json.loads(done.stdout)
    assert answer["status"] == "failed"
    assert {r["error_code"] for r in answer["regions"]} == {"health_check_failed"}


def test_exit_2_for_a_path_that_does_not_exist_or_no_configuration(cli_env_for, tmp_path):
    env = cli_env_for("http://127.0.0.1:9", "cp_x")
    missing = run_cli("deploy", str(tmp_path / "nope"), "--app", "shop", "--stage", "production", env=env)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"controlplane: {tmp_path / 'nope'}: no such file or directory"
    ]
    unconfigured = run_cli("deploy", str(tmp_path), "--app", "shop", "--stage", "production",
                           env=cli_env_for("", ""))  # fmt: skip
    assert unconfigured.returncode == 2 and "CONTROLPLANE_URL" in unconfigured.stderr
    assert "Traceback" not in missing.stderr + unconfigured.stderr


def test_exit_3_when_the_failure_policy_rolls_back(shop, stack, source, region_endpoints):
    assert run_cli("deploy", str(source), "--app", "shop", "--stage", "production", env=stack).returncode == 0
    shop.stages.filter(name="production").update(rollout={"on_failure": "rollback"})
    region_endpoints.failing.add("eu-west-1")
    (source / "app.py").write_text("def handler(event, context):\n    return {'statusCode': 500}\n")
    done = run_cli("deploy", str(source), "--app", "shop", "--stage", "production", env=stack)
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].endswith("rolled back")
    latest = Deployment.objects.filter(app=shop).order_by("-pk").first()
    assert latest.status == DeploymentStatus.ROLLED_BACK


def test_exit_4_on_timeout_and_the_deployment_goes_on(shop, stack, source, aws_proxy):
    aws_proxy.delay_s = 0.2  # a deploy of a few seconds
    try:
        done = run_cli(
            "deploy", str(source), "--app", "shop", "--stage", "production", "--timeout", "1s", env=stack
        )
    finally:
        aws_proxy.delay_s = 0
    assert done.returncode == 4
    assert "timed out waiting for deployment" in done.stderr and "goes on" in done.stderr
    deployment = Deployment.objects.get(app=shop)
    assert wait_finished(deployment.pk).status == DeploymentStatus.SUCCEEDED


def test_exit_5_when_the_stage_is_pinned_and_for_a_viewer(
    shop, stack, source, cli_env_for, live_server, team
):
    shop.stages.filter(name="production").update(pinned=True, pinned_reason="rolled back by ada")
    done = run_cli("deploy", str(source), "--app", "shop", "--stage", "production", env=stack)
    assert done.returncode == 5
    assert done.stderr.startswith("controlplane: refused (409): ") and "(stage_pinned)" in done.stderr
    assert not Deployment.objects.filter(app=shop).exists()
    viewer = cli_env_for(live_server.url, ApiTokenFactory(team=team, role=Role.VIEWER).raw)
    assert run_cli("env", "set", "A=1", "--app", "shop", env=viewer).returncode == 5


def test_exit_6_when_the_control_plane_cannot_be_reached(cli_env_for, source):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = run_cli("deploy", str(source), "--app", "shop", "--stage", "production",
                   env=cli_env_for(f"http://127.0.0.1:{port}", "cp_x"))  # fmt: skip
    assert done.returncode == 6
    assert done.stderr.startswith(f"controlplane: cannot reach http://127.0.0.1:{port}")
    assert len(done.stderr.strip().splitlines()) == 1


def test_ctrl_c_stops_following_and_never_cancels(shop, stack, source, aws_proxy):
    aws_proxy.delay_s = 0.2
    proc = subprocess.Popen(
        cli_argv("deploy", str(source), "--app", "shop", "--stage", "production"),
        env=stack, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = proc.stdout.readline()  # "deployment N of shop production: URL": it is following
        assert first.startswith("deployment "), first + proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        aws_proxy.delay_s = 0
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "stopped following" in err and "goes on" in err and "Traceback" not in err
    deployment = Deployment.objects.get(app=shop)
    assert not deployment.cancel_requested
    assert wait_finished(deployment.pk).status == DeploymentStatus.SUCCEEDED


def test_env_secret_is_read_from_stdin_never_argv(shop, stack):
    done = run_cli("env", "set", "DB_PASSWORD", "--secret", "--app", "shop", "--stage", "production",
                   env=stack, stdin="hunter2\n")  # fmt: skip
    assert done.returncode == 0, done.stderr
    row = EnvVar.objects.get(app=shop, key="DB_PASSWORD")
    assert (row.value, row.secret, row.stage.name) == ("hunter2", True, "production")
    listed = run_cli("env", "list", "--app", "shop", env=stack)
    assert "DB_PASSWORD=******** (secret)  [stage=production]" in listed.stdout
    assert "hunter2" not in listed.stdout
    assert (
        run_cli("env", "unset", "DB_PASSWORD", "--app", "shop", "--stage", "production", env=stack).returncode
        == 0
    )
    assert not EnvVar.objects.filter(app=shop).exists()


def test_cancel_on_interrupt_cancels(shop, stack, source, aws_proxy):
    aws_proxy.delay_s = 0.2
    proc = subprocess.Popen(
        cli_argv("deploy", str(source), "--app", "shop", "--stage", "production", "--cancel-on-interrupt"),
        env=stack, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout.readline().startswith("deployment ")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        aws_proxy.delay_s = 0
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "cancelled" in err
    deployment = Deployment.objects.get(app=shop)
    assert deployment.cancel_requested
    assert wait_finished(deployment.pk).status in (DeploymentStatus.CANCELLED, DeploymentStatus.SUCCEEDED)


def test_promote_releases_diff_status_and_logs(shop, stack, source):
    StageFactory(app=shop, name="staging", branch="develop")
    assert run_cli("deploy", str(source), "--app", "shop", "--stage", "staging", env=stack).returncode == 0
    promoted = run_cli(
        "promote", "--app", "shop", "--from", "staging", "--to", "production", "--json", env=stack
    )
    assert promoted.returncode == 0, promoted.stderr
    answer = json.loads(promoted.stdout)
    assert (answer["kind"], answer["stage"], answer["status"]) == ("promote", "production", "succeeded")

    releases = json.loads(run_cli("releases", "--app", "shop", "--json", env=stack).stdout)
    by_stage = {r["stage"]: r for r in releases}
    assert by_stage["production"]["live_in"] == sorted(REGIONS)
    diff = run_cli("diff", str(by_stage["production"]["id"]), str(by_stage["staging"]["id"]), env=stack)
    assert diff.returncode == 0 and "commits:" in diff.stdout

    status = run_cli("status", "--app", "shop", env=stack)
    lines = status.stdout.splitlines()
    production = lines[lines.index("  production") + 1 : lines.index("  staging")]
    assert [line.split()[:2] for line in production] == [["eu-west-1", "v1"], ["us-east-1", "v1"]]
    one = run_cli("status", str(answer["deployment"]), env=stack)
    assert (
        one.returncode == 0 and one.stdout.splitlines()[-1] == f"deployment {answer['deployment']} succeeded"
    )
    logs = run_cli("logs", str(answer["deployment"]), env=stack)
    assert logs.returncode == 0 and "Deployment succeeded" in logs.stdout
    followed = run_cli("logs", str(answer["deployment"]), "--follow", "--json", env=stack)
    last = json.loads(followed.stdout.splitlines()[-1])
    assert followed.returncode == 0 and last["type"] == "result" and last["status"] == "succeeded"
    assert all(json.loads(line)["type"] == "event" for line in followed.stdout.splitlines()[:-1])
