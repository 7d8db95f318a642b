"""Real git repositories for tests: a bare repository on local disk with real commits made by the
git CLI, a dumb-HTTP server for it (optionally behind basic auth), and push payloads in GitHub's and
GitLab's documented formats that point at it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import subprocess
import threading
import uuid
from functools import partial
from pathlib import Path

AUTHOR = ("Ada Lovelace", "ada@example.com")
ZERO_SHA = "0" * 40


def git(*args: str, cwd: Path | str, author: tuple[str, str] = AUTHOR) -> str:
    """Run git (no global or system config) and return its stdout."""
    name, email = author
    done = subprocess.run(
        [
            "git",
            "-c",
            f"user.name={name}",
            "-c",
            f"user.email={email}",
            "-c",
            "init.defaultBranch=main",
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1"},
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout.strip()


class GitRepo:
    """A bare repository (what a git host serves) and a work tree whose commits are pushed to it."""

    def __init__(self, root: Path, name: str = "shop", owner: str = "acme"):
        self.name = name
        self.owner = owner
        self.bare = root / f"{name}.git"
        self.work = root / f"{name}-work"
        self.bare.mkdir(parents=True)
        git("init", "-q", "--bare", str(self.bare), cwd=root)
        # Dumb HTTP serves files: keep the refs list current on every push.
        git("config", "receive.denyCurrentBranch", "ignore", cwd=self.bare)
        hook = self.bare / "hooks" / "post-update"
        hook.write_text("#!/bin/sh\nexec git update-server-info\n")
        hook.chmod(0o755)
        git("init", "-q", str(self.work), cwd=root)
        git("remote", "add", "origin", str(self.bare), cwd=self.work)

    @property
    def url(self) -> str:
        """The repository's clone URL on local disk."""
        return f"file://{self.bare}"

    @property
    def html_url(self) -> str:
        return f"https://github.com/{self.owner}/{self.name}"

    def commit(
        self,
        files: dict[str, str | bytes | None],
        message: str = "Change things",
        *,
        branch: str = "main",
        author: tuple[str, str] = AUTHOR,
        executable: tuple[str, ...] = (),
    ) -> str:
        """Write ``files`` (None deletes one), commit them to ``branch`` and push; returns the sha."""
        if not git("rev-parse", "--all", cwd=self.work):
            git("symbolic-ref", "HEAD", f"refs/heads/{branch}", cwd=self.work)  # the first commit
        elif git("branch", "--list", branch, cwd=self.work):
            git("checkout", "-q", branch, cwd=self.work)
        else:
            git("checkout", "-q", "-b", branch, cwd=self.work)
        for name, content in files.items():
            path = self.work / name
            if content is None:
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
            path.chmod(0o755 if name in executable else 0o644)
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "--allow-empty", "-m", message, cwd=self.work, author=author)
        sha = git("rev-parse", "HEAD", cwd=self.work)
        git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=self.work)
        return sha

    def tag(self, name: str, sha: str) -> None:
        git("tag", name, sha, cwd=self.work)
        git("push", "-q", "origin", f"refs/tags/{name}", cwd=self.work)

    def tree(self, sha: str) -> str:
        return git("rev-parse", f"{sha}^{{tree}}", cwd=self.work)

    def files_at(self, sha: str) -> dict[str, bytes]:
        """Every file of commit ``sha`` with its content."""
        names = git("ls-tree", "-r", "--name-only", sha, cwd=self.work).splitlines()
        out = {}
        for name in names:
            out[name] = subprocess.run(
                ["git", "show", f"{sha}:{name}"], cwd=self.work, capture_output=True, check=True
            ).stdout
        return out


# --- Serving over HTTP ------------------------------------------------------------------------------


class DumbHttpGitServer:
    """Serves a bare repository over git's dumb HTTP protocol (plain files), optionally asking for
    basic auth. Dumb HTTP cannot fetch a single commit by sha, so builds fall back to a full fetch."""

    def __init__(self, repo: GitRepo, *, username: str = "", password: str = ""):
        self.repo = repo
        self.expected = (
            "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode() if password else ""
        )
        self.seen_authorization: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                header = self.headers.get("Authorization", "")
                server.seen_authorization.append(header)
                if server.expected and not hmac.compare_digest(header, server.expected):
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        git("update-server-info", cwd=repo.bare)
        handler = partial(Handler, directory=str(repo.bare.parent))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/{self.repo.bare.name}"

    def start(self) -> DumbHttpGitServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- Payloads ---------------------------------------------------------------------------------------


def _commit_entry(repo: GitRepo, sha: str, base_url: str) -> dict:
    message = git("log", "-1", "--format=%B", sha, cwd=repo.work)
    name = git("log", "-1", "--format=%an", sha, cwd=repo.work)
    email = git("log", "-1", "--format=%ae", sha, cwd=repo.work)
    return {
        "id": sha,
        "message": message,
        "url": f"{base_url}/commit/{sha}",
        "author": {"name": name, "email": email},
    }


def github_push(
    repo: GitRepo,
    *,
    after: str,
    before: str = ZERO_SHA,
    ref: str = "refs/heads/main",
    commits: list[str] | None = None,
    deleted: bool = False,
    clone_url: str | None = None,
) -> dict:
    """A GitHub ``push`` payload for ``repo`` (its clone_url is the bare repository on disk)."""
    shas = commits if commits is not None else ([] if deleted else [after])
    entries = []
    for sha in shas:
        entry = _commit_entry(repo, sha, repo.html_url)
        entry["author"]["username"] = "ada"
        entry.update(tree_id=repo.tree(sha), distinct=True, timestamp="2026-01-01T00:00:00Z", added=[],
                     removed=[], modified=[], committer=entry["author"])  # fmt: skip
        entries.append(entry)
    return {
        "ref": ref,
        "before": before,
        "after": ZERO_SHA if deleted else after,
        "created": before == ZERO_SHA,
        "deleted": deleted,
        "forced": False,
        "base_ref": None,
        "compare": f"{repo.html_url}/compare/{before[:12]}...{after[:12]}",
        "commits": entries,
        "head_commit": entries[-1] if entries else None,
        "repository": {
            "id": 1296269,
            "name": repo.name,
            "full_name": f"{repo.owner}/{repo.name}",
            "private": False,
            "owner": {"name": repo.owner, "login": repo.owner},
            "html_url": repo.html_url,
            "url": repo.html_url,
            "clone_url": clone_url or repo.url,
            "git_url": f"git://github.com/{repo.owner}/{repo.name}.git",
            "ssh_url": f"git@github.com:{repo.owner}/{repo.name}.git",
            "default_branch": "main",
        },
        "pusher": {"name": "ada", "email": AUTHOR[1]},
        "sender": {"login": "ada", "id": 1},
    }


def github_ping(repo: GitRepo) -> dict:
    return {
        "zen": "Keep it logically awesome.",
        "hook_id": 42,
        "hook": {"type": "Repository", "events": ["push"], "config": {"content_type": "json"}},
        "repository": github_push(repo, after=ZERO_SHA, deleted=True)["repository"],
        "sender": {"login": "ada"},
    }


def github_headers(secret: str, body: bytes, *, event: str = "push", delivery: str | None = None) -> dict:
    """Django test client ``headers=`` for a GitHub delivery of ``body`` signed with ``secret``."""
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": signature,
        "X-GitHub-Hook-ID": "42",
        "User-Agent": "GitHub-Hookshot/abc123",
    }


def gitlab_push(
    repo: GitRepo,
    *,
    after: str,
    before: str = ZERO_SHA,
    ref: str = "refs/heads/main",
    commits: list[str] | None = None,
) -> dict:
    """A GitLab ``Push Hook`` payload for ``repo`` (git_http_url is the bare repository on disk)."""
    web_url = f"https://gitlab.example.com/{repo.owner}/{repo.name}"
    shas = commits if commits is not None else ([] if after == ZERO_SHA else [after])
    entries = [
        {**_commit_entry(repo, sha, web_url + "/-"), "title": "", "timestamp": "2026-01-01T00:00:00+00:00",
         "added": [], "modified": [], "removed": []}
        for sha in shas
    ]  # fmt: skip
    project = {
        "id": 15,
        "name": repo.name,
        "web_url": web_url,
        "git_ssh_url": f"git@gitlab.example.com:{repo.owner}/{repo.name}.git",
        "git_http_url": repo.url,
        "namespace": repo.owner,
        "path_with_namespace": f"{repo.owner}/{repo.name}",
        "default_branch": "main",
        "homepage": web_url,
        "url": f"git@gitlab.example.com:{repo.owner}/{repo.name}.git",
        "ssh_url": f"git@gitlab.example.com:{repo.owner}/{repo.name}.git",
        "http_url": repo.url,
    }
    return {
        "object_kind": "tag_push" if ref.startswith("refs/tags/") else "push",
        "event_name": "tag_push" if ref.startswith("refs/tags/") else "push",
        "before": before,
        "after": after,
        "ref": ref,
        "ref_protected": True,
        "checkout_sha": None if after == ZERO_SHA else after,
        "user_id": 4,
        "user_name": "Ada Lovelace",
        "user_username": "ada",
        "user_email": "",
        "project_id": 15,
        "project": project,
        "commits": entries,
        "total_commits_count": len(entries),
        "repository": {
            "name": repo.name,
            "url": project["url"],
            "description": "",
            "homepage": web_url,
            "git_http_url": repo.url,
            "git_ssh_url": project["git_ssh_url"],
            "visibility_level": 0,
        },
    }


def gitlab_headers(token: str, *, event: str = "Push Hook", uuid_: str | None = None) -> dict:
    return {
        "X-Gitlab-Event": event,
        "X-Gitlab-Token": token,
        "X-Gitlab-Event-UUID": uuid_ or str(uuid.uuid4()),
        "X-Gitlab-Instance": "https://gitlab.example.com",
        "User-Agent": "GitLab/17.0.0",
    }


def body_of(payload: dict) -> bytes:
    return json.dumps(payload).encode()
