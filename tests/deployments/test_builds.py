"""Builds from git, against real repositories made with the git CLI."""

from __future__ import annotations

import io
import os
import time
import zipfile
from pathlib import Path

import pytest

from deployments import artifacts
from deployments.builds import BuildFailed, build_artifact, zip_tree
from deployments.models import Artifact
from tests.factories import AppFactory
from tests.support.gitrepo import DumbHttpGitServer, GitRepo
from tests.support.processes import wait_for

pytestmark = pytest.mark.django_db

HANDLER = "def handler(event, context):\n    return {'statusCode': 200, 'body': 'v1'}\n"


class Log:
    """Collects what a build emits, as the deployment log would."""

    def __init__(self):
        self.lines: list[tuple[str, str]] = []

    def __call__(self, level: str, line: str) -> None:
        self.lines.append((level, line))

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def zip_files(artifact: Artifact) -> dict[str, bytes]:
    with zipfile.ZipFile(artifacts.artifact_path(artifact)) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


@pytest.fixture
def repo(tmp_path) -> GitRepo:
    return GitRepo(tmp_path / "git")


@pytest.fixture
def app(team, repo):
    return AppFactory(team=team, slug="shop", repo_url=repo.url, runtime="python3.12", handler="app.handler")


def test_the_built_zip_holds_exactly_the_files_of_that_commit(app, repo):
    first = repo.commit({"app.py": HANDLER, "lib/util.py": "A = 1\n", "README.md": "# shop\n"}, "First")
    repo.commit({"app.py": HANDLER.replace("v1", "v2"), "lib/new.py": "B = 2\n", "README.md": None}, "Second")

    log = Log()
    artifact = build_artifact(app=app, sha=first, emit=log)

    assert zip_files(artifact) == repo.files_at(first)
    assert artifact.source == "build" and artifact.tree_sha == repo.tree(first)
    assert f"Fetching {repo.url} at {first}" in log.text


def test_an_abbreviated_sha_is_built_too(app, repo):
    first = repo.commit({"app.py": HANDLER}, "First")
    repo.commit({"app.py": HANDLER + "# later\n"}, "Second")

    artifact = build_artifact(app=app, sha=first[:10], emit=Log())
    assert zip_files(artifact) == repo.files_at(first)


def test_the_build_commands_output_streams_to_the_log_and_its_output_dir_is_zipped(app, repo):
    sha = repo.commit({"src/app.py": HANDLER, "build.sh": "echo never zipped\n"}, "Code")
    app.build_command = (
        "echo compiling $CONTROLPLANE_COMMIT_SHORT_SHA; mkdir -p dist/pkg && cp src/app.py dist/ && "
        "echo 'X = 1' > dist/pkg/__init__.py && echo warning-on-stderr >&2"
    )
    app.build_output_dir = "dist"
    app.save()

    log = Log()
    artifact = build_artifact(app=app, sha=sha, emit=log)

    assert zip_files(artifact) == {"app.py": HANDLER.encode(), "pkg/__init__.py": b"X = 1\n"}
    lines = [line for _, line in log.lines]
    assert f"compiling {sha[:7]}" in lines and "warning-on-stderr" in lines
    assert lines.index(f"compiling {sha[:7]}") < lines.index("warning-on-stderr")


def test_a_failing_build_raises_with_the_last_lines_of_its_output(app, repo):
    sha = repo.commit({"app.py": HANDLER}, "Code")
    app.build_command = "for i in $(seq -w 1 30); do echo step-$i; done; echo 'npm ERR! broken' >&2; exit 3"
    app.save()

    log = Log()
    with pytest.raises(BuildFailed) as failure:
        build_artifact(app=app, sha=sha, emit=log)

    detail = failure.value.detail
    assert failure.value.code == "build_failed"
    assert "exited with status 3" in detail
    assert "npm ERR! broken" in detail and "step-30" in detail and "step-12" in detail
    assert "step-11" not in detail  # only the tail: the last 20 lines
    assert ("error", detail) in log.lines
    assert not Artifact.objects.exists()


def test_the_build_never_sees_the_control_planes_secrets(app, repo, monkeypatch, settings):
    for name, value in {
        "SECRET_KEY": "django-secret-key-value",
        "ENCRYPTION_KEYS": "fernet-key-value",
        "DATABASE_URL": "postgres://admin:dbpass@db/controlplane",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEY",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
        "AWS_SESSION_TOKEN": "aws-session-value",
        "REDIS_URL": "redis://:redispass@cache:6379/0",
    }.items():
        monkeypatch.setenv(name, value)
    sha = repo.commit({"app.py": HANDLER}, "Code")
    app.build_command = "env | sort"
    app.git_credential = "private-deploy-token"
    app.save()

    log = Log()
    build_artifact(app=app, sha=sha, emit=log)

    env = dict(line.split("=", 1) for _, line in log.lines if "=" in line and line.split("=", 1)[0].isupper())
    forbidden_names = (
        "SECRET_KEY", "ENCRYPTION_KEYS", "DATABASE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "CONTROLPLANE_DATA_DIR",
        "GIT_ASKPASS", "CONTROLPLANE_GIT_PASSWORD",
    )  # fmt: skip
    for name in forbidden_names:
        assert name not in env
    forbidden_values = (
        "django-secret-key-value", "fernet-key-value", "dbpass", "aws-secret-value", settings.SECRET_KEY,
        "private-deploy-token",
    )  # fmt: skip
    for value in forbidden_values:
        assert value not in log.text
    assert env["CONTROLPLANE_COMMIT_SHA"] == sha
    assert env["CONTROLPLANE_COMMIT_MESSAGE"] == "Code"
    assert env["CONTROLPLANE_APP"] == "shop"
    # Exactly what the README promises (bash adds PWD, SHLVL and _), plus the sandbox's proxy.
    promised = {
        "PATH", "HOME", "LANG", "CI", "CONTROLPLANE_APP", "CONTROLPLANE_TEAM", "CONTROLPLANE_REPO_URL",
        "CONTROLPLANE_COMMIT_SHA", "CONTROLPLANE_COMMIT_SHORT_SHA", "CONTROLPLANE_COMMIT_TREE",
        "CONTROLPLANE_COMMIT_MESSAGE", "CONTROLPLANE_COMMIT_AUTHOR",
    }  # fmt: skip
    proxy = {"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"}
    assert set(env) - {"PWD", "SHLVL", "_"} == promised | proxy
    assert env["HOME"] == "/home/sandbox" != os.environ.get("HOME")


def test_a_build_past_the_time_limit_is_killed_with_its_children(app, repo, settings):
    settings.BUILD_TIMEOUT = 4
    sha = repo.commit({"app.py": HANDLER}, "Code")
    # Odd durations: the test finds the build's processes among the host's by their command line.
    app.build_command = "sleep 3017 & setsid sleep 3018 & echo started; sleep 3019"
    app.save()

    started = time.monotonic()
    with pytest.raises(BuildFailed) as failure:
        build_artifact(app=app, sha=sha, emit=Log())

    assert time.monotonic() - started < 30
    assert "4 s limit" in failure.value.detail and "started" in failure.value.detail
    wait_for(
        lambda: not any(_running("sleep", seconds) for seconds in ("3017", "3018", "3019")),
        timeout=10,
        message="every process of the build to die",
    )


def _running(*argv: str) -> bool:
    """True when a live host process has exactly this command line."""
    wanted = "\0".join(argv).encode() + b"\0"
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes() == wanted:
                status = (proc / "status").read_text().splitlines()
                if not any(line.startswith("State:") and " Z" in line for line in status):
                    return True
        except OSError:
            continue
    return False


def test_a_commit_with_a_tree_built_before_reuses_its_artifact(app, repo):
    first = repo.commit({"app.py": HANDLER}, "Code")
    app.build_command = "echo running-the-build"
    app.save()
    built = build_artifact(app=app, sha=first, emit=Log())
    # A second commit with the very same files (an empty commit, a revert, a merge of nothing).
    second = repo.commit({}, "Empty commit")
    assert repo.tree(second) == repo.tree(first)

    log = Log()
    again = build_artifact(app=app, sha=second, emit=log)

    assert again.pk == built.pk
    assert "reusing it, no build" in log.text and "running-the-build" not in log.text
    assert Artifact.objects.filter(app=app).count() == 1


def test_a_changed_build_command_builds_the_same_tree_again(app, repo):
    first = repo.commit({"app.py": HANDLER}, "Code")
    app.build_command = "echo one > built.txt"
    app.save()
    one = build_artifact(app=app, sha=first, emit=Log())
    assert zip_files(one)["built.txt"] == b"one\n"

    app.build_command = "echo two > built.txt"
    app.save()
    log = Log()
    second = repo.commit({}, "Same tree, new build command")
    two = build_artifact(app=app, sha=second, emit=log)

    assert two.pk != one.pk and zip_files(two)["built.txt"] == b"two\n"
    assert "reusing it" not in log.text and "building it again" in log.text
    assert two.tree_sha == one.tree_sha == repo.tree(first)

    # Back to the first command: the artifact it made is reused again.
    app.build_command = "echo one > built.txt"
    app.save()
    log = Log()
    again = build_artifact(app=app, sha=second, emit=log)
    assert again.pk == one.pk and "reusing it, no build" in log.text


def test_a_changed_output_dir_builds_the_same_tree_again(app, repo):
    sha = repo.commit({"app.py": HANDLER, "dist/app.py": HANDLER.replace("v1", "dist")}, "Code")
    built = build_artifact(app=app, sha=sha, emit=Log())
    assert "dist/app.py" in zip_files(built)

    app.build_output_dir = "dist"
    app.save()
    log = Log()
    rebuilt = build_artifact(app=app, sha=sha, emit=log)

    assert rebuilt.pk != built.pk and "reusing it" not in log.text
    assert set(zip_files(rebuilt)) == {"app.py"} and b"dist" in zip_files(rebuilt)["app.py"]


def test_a_changed_runtime_builds_the_same_tree_again(app, repo):
    sha = repo.commit({"app.py": HANDLER}, "Code")
    app.build_command = 'echo "$(ls)" > /dev/null'
    app.save()
    built = build_artifact(app=app, sha=sha, emit=Log())

    app.runtime = "python3.13"
    app.save()
    log = Log()
    rebuilt = build_artifact(app=app, sha=sha, emit=log)

    assert rebuilt.pk != built.pk and "reusing it" not in log.text
    assert "$ echo" in log.text
    assert Artifact.objects.filter(app=app, tree_sha=repo.tree(sha)).count() == 2


def test_the_same_files_always_zip_to_the_same_bytes(tmp_path):
    def make(folder: Path, mtime: int) -> bytes:
        (folder / "pkg").mkdir(parents=True)
        (folder / "pkg" / "b.py").write_text("B = 1\n")
        (folder / "a.py").write_text("A = 1\n")
        (folder / "run.sh").write_text("#!/bin/sh\n")
        (folder / "run.sh").chmod(0o775)
        (folder / "alias.py").symlink_to("a.py")
        for path in folder.rglob("*"):
            os.utime(path, (mtime, mtime), follow_symlinks=False)
        zip_tree(folder, folder.parent / f"{folder.name}.zip")
        return (folder.parent / f"{folder.name}.zip").read_bytes()

    one, two = make(tmp_path / "one", 1_000_000_000), make(tmp_path / "two", 1_700_000_000)
    assert one == two
    with zipfile.ZipFile(io.BytesIO(one)) as zf:
        assert [i.filename for i in zf.infolist()] == ["a.py", "alias.py", "pkg/b.py", "run.sh"]
        assert zf.getinfo("run.sh").external_attr >> 16 == 0o100755
        assert zf.getinfo("alias.py").external_attr >> 16 == 0o120777


def test_an_unknown_commit_fails_the_build(app, repo):
    repo.commit({"app.py": HANDLER}, "Code")
    with pytest.raises(BuildFailed) as failure:
        build_artifact(app=app, sha="deadbeef" * 5, emit=Log())
    assert "deadbeef" in failure.value.detail


def test_a_ref_that_is_not_a_sha_is_refused_before_running_git(app):
    with pytest.raises(BuildFailed) as failure:
        build_artifact(app=app, sha="--upload-pack=touch /tmp/pwned", emit=Log())
    assert "not a git commit sha" in failure.value.detail


def test_an_output_dir_outside_the_repository_is_refused(app, repo):
    sha = repo.commit({"app.py": HANDLER}, "Code")
    app.build_output_dir = "../.."
    app.save()
    with pytest.raises(BuildFailed) as failure:
        build_artifact(app=app, sha=sha, emit=Log())
    assert "outside the repository" in failure.value.detail


def test_a_built_zip_without_the_handler_fails_the_build(app, repo):
    sha = repo.commit({"main.py": HANDLER}, "Wrong file name")
    with pytest.raises(BuildFailed) as failure:
        build_artifact(app=app, sha=sha, emit=Log())
    assert "app.py" in failure.value.detail


@pytest.fixture
def private_server(repo):
    server = DumbHttpGitServer(repo, username="deploy", password="s3cret-deploy-token").start()
    yield server
    server.stop()


def test_a_private_repository_is_fetched_with_the_apps_credential_which_never_reaches_the_log(
    app, repo, private_server
):
    first = repo.commit({"app.py": HANDLER}, "First")
    repo.commit({"app.py": HANDLER + "# two\n"}, "Second")
    private_server.repo = repo
    app.repo_url = private_server.url
    app.git_credential = "deploy:s3cret-deploy-token"
    app.save()

    log = Log()
    artifact = build_artifact(app=app, sha=first, emit=log)

    assert zip_files(artifact) == repo.files_at(first)
    # Dumb HTTP cannot serve one commit by sha: the build fell back to fetching the branches.
    assert "fetching all its branches" in log.text
    assert private_server.expected in private_server.seen_authorization
    assert "s3cret-deploy-token" not in log.text


def test_a_wrong_credential_fails_the_build_without_revealing_it(app, repo, private_server):
    sha = repo.commit({"app.py": HANDLER}, "First")
    app.repo_url = private_server.url
    app.git_credential = "deploy:wrong-token-value"
    app.save()

    log = Log()
    with pytest.raises(BuildFailed) as failure:
        build_artifact(app=app, sha=sha, emit=log)
    assert "git fetch failed" in failure.value.detail
    assert "wrong-token-value" not in log.text and "wrong-token-value" not in failure.value.detail


def test_a_password_inside_the_repo_url_is_redacted_from_the_log(app, repo, private_server):
    sha = repo.commit({"app.py": HANDLER}, "First")
    app.repo_url = private_server.url.replace("http://", "http://deploy:s3cret-deploy-token@")
    app.save()

    log = Log()
    artifact = build_artifact(app=app, sha=sha, emit=log)
    assert zip_files(artifact) == repo.files_at(sha)
    assert "s3cret-deploy-token" not in log.text and "http://***@" in log.text
