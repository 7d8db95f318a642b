"""What a stage runs and ran: the release live in each region, the one it is meant to run, and
the difference between two releases (code, config, env keys, commits). Rollback is
:mod:`.rollback`; new deployments, promotion and config-only deploys are :mod:`.deployments`;
freezing a release is the engine's (:mod:`deployments.engine.releases`)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from django.conf import settings

from regions.models import StagePlacement

from ..choices import DeploymentKind
from ..engine.releases import release_env
from ..models import Deployment, Release, Stage
from ..selectors import LIVE_STATUSES, current_release


def live_releases(*, stage: Stage) -> dict[str, Release]:
    """``{region code: release}`` the stage's alias runs in each enabled region of its app, as the
    deploy engine recorded it (regions never deployed are left out)."""
    rows = (
        StagePlacement.objects.filter(stage=stage, placement__region__enabled=True, release__isnull=False)
        .select_related("release__artifact", "placement__region")
        .order_by("placement__region__code")
    )
    return {sp.placement.region.code: sp.release for sp in rows}


def intended_release(*, stage: Stage) -> Release | None:
    """The release the stage is meant to run: the one every region runs when they agree (after
    a rollback of every region, its target), else the release of the stage's newest live
    deployment that is not a rollback, so one region rolled back does not speak for the rest.
    None when the stage never ran a release."""
    live = live_releases(stage=stage)
    if live and len({r.pk for r in live.values()}) == 1:
        return next(iter(live.values()))
    newest = (
        Deployment.objects.filter(stage=stage, status__in=LIVE_STATUSES, release__isnull=False)
        .exclude(kind=DeploymentKind.ROLLBACK)
        .order_by("-finished_at", "-id")
        .select_related("release__artifact")
        .first()
    )
    return newest.release if newest is not None else current_release(stage=stage)


# --- Diffs ------------------------------------------------------------------------------------


COMMIT_SHA = re.compile(r"^[0-9a-fA-F]{7,64}$")


def _gitlab_hosts() -> set[str]:
    """Self-hosted GitLab hosts named in ``settings.GITLAB_HOSTS`` (lowercased, without port)."""
    hosts = getattr(settings, "GITLAB_HOSTS", None) or []
    if isinstance(hosts, str):
        hosts = hosts.split(",")
    return {str(h).strip().lower().split(":")[0] for h in hosts if str(h).strip()}


def repo_web_url(repo_url: str) -> tuple[str, str]:
    """``(web URL, host kind)`` of a git remote, never with the user or password a clone URL may
    carry: kind is "github" (``github`` in the host, an ``owner/repo`` path), "gitlab" (``gitlab``
    in the host or the host in ``settings.GITLAB_HOSTS``, a ``group/.../project`` path) or ""
    (unknown: no link). ``("", "")`` for anything that is not an http(s) or ssh remote."""
    url = (repo_url or "").strip()
    scp = re.match(r"^(?:[^@/:]+@)?(?P<host>[^:/@]+):(?P<path>(?!//)[^:]+)$", url)
    try:
        if "://" not in url and scp:
            scheme, host, port, path = "https", scp.group("host"), None, scp.group("path")
        else:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https", "ssh", "git"):
                return "", ""
            host, path = parts.hostname or "", parts.path
            # A web port only means something for http(s); ssh's port is not the web server's.
            port = parts.port if parts.scheme in ("http", "https") else None
            scheme = parts.scheme if parts.scheme in ("http", "https") else "https"
    except ValueError:
        return "", ""
    host = host.lower()
    if not host or not re.match(r"^[a-z0-9.-]+$", host):
        return "", ""
    path = path.strip("/").removesuffix(".git").strip("/")
    segments = [p for p in path.split("/") if p]
    if len(segments) < 2 or not all(re.match(r"^[A-Za-z0-9_.~-]+$", p) for p in segments):
        return "", ""
    web = f"{scheme}://{host}{f':{port}' if port else ''}/{'/'.join(segments)}"
    if "github" in host and len(segments) == 2:
        return web, "github"
    if "gitlab" in host or host in _gitlab_hosts():
        return web, "gitlab"
    return web, ""


def compare_url(repo_url: str, base: str, head: str) -> str:
    """A link to the commit range on GitHub or GitLab; "" for other hosts or missing shas."""
    web, kind = repo_web_url(repo_url)
    if not (web and COMMIT_SHA.match(base or "") and COMMIT_SHA.match(head or "")):
        return ""
    if kind == "github":
        return f"{web}/compare/{base}...{head}"
    if kind == "gitlab":
        return f"{web}/-/compare/{base}...{head}"
    return ""


def diff_releases(*, release: Release, against: Release) -> dict:
    """What changed from ``against`` to ``release``: the commit range, env keys added / changed /
    removed (per region, keys only: values are never shown), config fields and the artifact."""
    new_env, old_env = release_env(release), release_env(against)
    added: set[str] = set()
    removed: set[str] = set()
    changed: set[str] = set()
    by_region: dict[str, dict[str, list[str]]] = {}
    for code in sorted(set(new_env) | set(old_env)):
        new, old = new_env.get(code, {}), old_env.get(code, {})
        region_diff = {
            "added": sorted(set(new) - set(old)),
            "removed": sorted(set(old) - set(new)),
            "changed": sorted(k for k in set(new) & set(old) if new[k] != old[k]),
        }
        added.update(region_diff["added"])
        removed.update(region_diff["removed"])
        changed.update(region_diff["changed"])
        if any(region_diff.values()):
            by_region[code] = region_diff
    config = {
        key: {"from": against.config.get(key), "to": release.config.get(key)}
        for key in sorted(set(release.config) | set(against.config))
        if release.config.get(key) != against.config.get(key)
    }
    return {
        "release": release.pk,
        "against": against.pk,
        "commits": {
            "from": against.commit_sha,
            "to": release.commit_sha,
            "compare_url": compare_url(release.app.repo_url, against.commit_sha, release.commit_sha),
        },
        "artifact": {
            "changed": release.artifact_id != against.artifact_id,
            "from": against.artifact.sha256,
            "to": release.artifact.sha256,
        },
        "env": {
            "added": sorted(added),
            "changed": sorted(changed),
            "removed": sorted(removed),
            "by_region": by_region,
        },
        "config": config,
    }
