"""Apps, their stages and env vars: every change, checked against the domain's rules and audited.

Callers (the REST API, the web UI, management commands) pass plain values; ``principal`` is who
acts (``None``: the installation itself). Another team's objects never reach these functions:
callers look them up through ``App.objects.visible_to(principal)`` first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from controlplane import audit
from controlplane.access import ALL_STAGES, Principal, require
from controlplane.choices import Role
from controlplane.errors import Conflict, DomainError
from controlplane.models import Team
from regions.models import AppRegion, Region, StagePlacement

from ..choices import ACTIVE_DEPLOYMENT_STATUSES, LAMBDA_RUNTIMES
from ..engine.removal import delete_app_rows, delete_stage_rows
from ..env import EnvTooLarge, InvalidEnvVar, effective_env, env_key_problem
from ..gitutil import repo_url_problem
from ..models import App, Deployment, EnvVar, Stage, generate_webhook_secret
from ..rollout import rollout_of, validate_rollout
from . import teardown

APP_FIELDS = (
    "name",
    "repo_url",
    "runtime",
    "handler",
    "memory_mb",
    "timeout_s",
    "health_path",
    "health_expected_status",
    "health_expected_text",
    "build_command",
    "build_output_dir",
    "build_network",
)
STAGE_FIELDS = ("branch", "domain", "hosted_zone_id", "rollout", "pinned", "pinned_reason")
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))+$")


class InvalidApp(DomainError):
    code = "invalid_app"
    status_code = 400


class InvalidRepoUrl(DomainError):
    """The repo_url is not one builds may fetch (see ``gitutil.repo_url_problem``)."""

    code = "invalid_repo_url"
    status_code = 400


class DuplicateApp(DomainError):
    code = "app_exists"
    status_code = 400


class InvalidRegions(DomainError):
    code = "invalid_region"
    status_code = 400


class InvalidStage(DomainError):
    code = "invalid_stage"
    status_code = 400


class DuplicateStage(DomainError):
    code = "stage_exists"
    status_code = 400


class DuplicateEnvVar(DomainError):
    code = "env_var_exists"
    status_code = 400


class DeploymentInProgress(Conflict):
    code = "deployment_in_progress"


class AppIsLive(Conflict):
    code = "app_is_live"


# --- Validation -------------------------------------------------------------------------------


def _check_app_fields(data: dict) -> None:
    """Raise InvalidApp for a value the model could not hold or Lambda would refuse, InvalidRepoUrl
    for a repo_url builds may not fetch."""
    if isinstance(data.get("repo_url"), str):
        problem = repo_url_problem(data["repo_url"])
        if problem:
            raise InvalidRepoUrl(f"repo_url: {problem}", fields={"repo_url": [problem]})
    problems: dict[str, list[str]] = {}
    if "runtime" in data and data["runtime"] not in LAMBDA_RUNTIMES:
        problems["runtime"] = [
            f"'{data['runtime']}' is not a supported Lambda runtime: use one of {', '.join(LAMBDA_RUNTIMES)}."
        ]
    if "memory_mb" in data and not 128 <= data["memory_mb"] <= 10240:
        problems["memory_mb"] = ["Memory must be from 128 to 10240 MB."]
    if "timeout_s" in data and not 1 <= data["timeout_s"] <= 900:
        problems["timeout_s"] = ["The timeout must be from 1 to 900 seconds."]
    if data.get("repo_url") and _has_password(data["repo_url"]):
        problems["repo_url"] = [
            "The URL carries a password or token; set it as the app's git_credential instead, "
            "where it is stored encrypted and never shown."
        ]
    if problems:
        field, messages = next(iter(problems.items()))
        raise InvalidApp(f"{field}: {messages[0]}", fields=problems)


def _has_password(url: str) -> bool:
    """True for ``https://user:token@host/...`` (and a bare token as the user of an http URL);
    ``git@host:path`` and ``ssh://git@host/path`` name a user only."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return False
    userinfo, at, _ = rest.partition("/")[0].rpartition("@")
    if not at:
        return False
    return ":" in userinfo or scheme.lower() in ("http", "https")


def _check_domain(domain: str, hosted_zone_id: str, *, stage: Stage | None) -> None:
    if not domain:
        return
    if not HOSTNAME_RE.match(domain):
        raise InvalidStage(
            f"'{domain}' is not a valid host name (like 'api.example.com').",
            fields={"domain": ["Not a valid host name."]},
        )
    if not hosted_zone_id:
        raise InvalidStage(
            "A domain needs the Route 53 hosted zone it lives in ('hosted_zone_id').",
            fields={"hosted_zone_id": ["Required with a domain."]},
        )
    taken = Stage.objects.filter(domain=domain)
    if stage is not None:
        taken = taken.exclude(pk=stage.pk)
    if taken.exists():
        raise InvalidStage(
            f"The domain '{domain}' is already used by another stage.", fields={"domain": ["In use."]}
        )


def _enabled_regions(codes: Iterable[str]) -> list[Region]:
    codes = list(dict.fromkeys(codes))
    found = {r.code: r for r in Region.objects.filter(code__in=codes)}
    missing = [c for c in codes if c not in found]
    if missing:
        raise InvalidRegions(
            f"Unknown region{'s' if len(missing) > 1 else ''}: {', '.join(missing)}.",
            fields={"regions": [f"Unknown: {', '.join(missing)}."]},
        )
    disabled = [c for c in codes if not found[c].enabled]
    if disabled:
        raise InvalidRegions(
            f"Not enabled on this installation: {', '.join(disabled)}.",
            fields={"regions": [f"Not enabled: {', '.join(disabled)}."]},
        )
    return [found[c] for c in codes]


def _check_no_active_deployment(*, app: App, stage: Stage | None = None) -> None:
    active = Deployment.objects.filter(app=app, status__in=ACTIVE_DEPLOYMENT_STATUSES)
    if stage is not None:
        active = active.filter(stage=stage)
    if active.exists():
        raise DeploymentInProgress("A deployment is in progress; wait for it to finish or cancel it.")


# --- Apps -------------------------------------------------------------------------------------


def create_app(*, principal: Principal | None, team: Team, data: dict, request=None) -> App:
    """Create an app in ``team`` placed in ``data["regions"]`` (codes). ``data`` holds ``slug`` and
    any of APP_FIELDS. Returns the app (its generated ``webhook_secret`` readable on it). Raises
    Forbidden (not a team admin), DuplicateApp, InvalidApp, InvalidRegions."""
    require(principal, Role.ADMIN, team_id=team.pk)
    data = dict(data)
    slug = data.pop("slug")
    codes = data.pop("regions", [])
    unknown = set(data) - set(APP_FIELDS)
    if unknown:
        raise InvalidApp(f"Unknown app fields: {', '.join(sorted(unknown))}.")
    _check_app_fields(data)
    regions = _enabled_regions(codes)
    with transaction.atomic():
        if App.objects.filter(team=team, slug=slug).exists():
            raise DuplicateApp(f"The team already has an app '{slug}'.", fields={"slug": ["Already exists."]})
        app = App(team=team, slug=slug, **data)
        app.full_clean(exclude=["webhook_secret", "git_credential"], validate_unique=False)
        app.save()
        AppRegion.objects.bulk_create([AppRegion(app=app, region=r) for r in regions])
        audit.record(
            team=team,
            principal=principal,
            action="app.create",
            obj=app,
            changes={**{k: getattr(app, k) for k in APP_FIELDS}, "regions": [r.code for r in regions]},
            request=request,
        )
    return app


def _set_regions(*, app: App, codes: list[str]) -> tuple[list[str], list[str]]:
    """Place ``app`` in exactly ``codes``; returns ``(added, removed)`` codes."""
    current = {p.region.code: p for p in app.placements.select_related("region")}
    wanted = list(dict.fromkeys(codes))
    added = [c for c in wanted if c not in current]
    removed = [c for c in current if c not in wanted]
    new_regions = _enabled_regions(added) if added else []
    if removed:
        live = sorted(
            StagePlacement.objects.filter(placement__app=app, placement__region__code__in=removed)
            .exclude(version="")
            .values_list("placement__region__code", flat=True)
            .distinct()
        )
        if live:
            raise InvalidRegions(
                f"The app is live in {', '.join(live)}: it cannot be removed from there yet.",
                fields={"regions": [f"Live in: {', '.join(live)}."]},
            )
        for stage in app.stages.all():
            used = sorted(rollout_of(stage).region_codes & set(removed))
            if used:
                raise InvalidRegions(
                    f"Stage '{stage.name}' names {', '.join(used)} in its rollout waves; "
                    "change the rollout first.",
                    fields={"regions": [f"In the rollout of '{stage.name}': {', '.join(used)}."]},
                )
        AppRegion.objects.filter(app=app, region__code__in=removed).delete()
    AppRegion.objects.bulk_create([AppRegion(app=app, region=r) for r in new_regions])
    return added, removed


def update_app(*, principal: Principal | None, app: App, data: dict, request=None) -> App:
    """Change any of APP_FIELDS and, for admins, ``regions`` (codes: the full new list). The
    change applies from the next deployment. Raises Forbidden (deployer needed, admin for regions;
    a token limited to some stages may not change what all stages share), InvalidApp,
    InvalidRegions."""
    require(principal, Role.DEPLOYER, app=app, stage=ALL_STAGES)
    data = dict(data)
    codes = data.pop("regions", None)
    if codes is not None:
        require(principal, Role.ADMIN, app=app, stage=ALL_STAGES)
    unknown = set(data) - set(APP_FIELDS)
    if unknown:
        raise InvalidApp(f"Unknown app fields: {', '.join(sorted(unknown))}.")
    _check_app_fields(data)
    if app.git_credential and data.get("repo_url", app.repo_url) != app.repo_url:
        # Builds hand the stored credential to whatever repo_url names: only an admin, who may
        # set the credential, may point it somewhere else.
        require(principal, Role.ADMIN, app=app, stage=ALL_STAGES)
    with transaction.atomic():
        changes = {k: [getattr(app, k), v] for k, v in data.items() if getattr(app, k) != v}
        for key, value in data.items():
            setattr(app, key, value)
        if changes:
            app.full_clean(exclude=["webhook_secret", "git_credential"], validate_unique=False)
            app.save(update_fields=list(changes))
        if codes is not None:
            added, removed = _set_regions(app=app, codes=codes)
            if added or removed:
                changes["regions"] = {"added": added, "removed": removed}
        if changes:
            audit.record(
                team=app.team,
                principal=principal,
                action="app.update",
                obj=app,
                changes=changes,
                request=request,
            )
    return app


def delete_app(
    *, principal: Principal | None, app: App, force: bool = False, request=None
) -> Deployment | None:
    """Delete an app and everything recorded about it. An app that still serves in any region
    (or whose teardown failed) is refused with AppIsLive (409, naming the regions) unless
    ``force``: then a ``teardown`` deployment takes every stage, the function and its API down
    in every region and is returned; the app is deleted once it succeeds. Returns None when the
    app was deleted at once. Raises Forbidden (admin needed), DeploymentInProgress."""
    require(principal, Role.ADMIN, app=app, stage=ALL_STAGES)
    with transaction.atomic():
        running = teardown.active_teardown(app=app)
        if running is not None and running.whole_app and force:
            return running  # (a repeated forced delete follows the same teardown)
        _check_no_active_deployment(app=app)
        live = teardown.live_regions(app=app)
        marked = app.stages.filter(teardown_started_at__isnull=False).exists()
        if (live or marked) and not force:
            raise AppIsLive(
                (
                    f"The app is live in {', '.join(live)}"
                    if live
                    else "The app's last teardown did not finish"
                )
                + "; deleting it here would leave it running there. Pass force=true to take it "
                "down first (a teardown deployment), then delete it.",
                extra={"regions": live},
            )
        if (live or marked) and app.placements.exists():
            return teardown.start_teardown(
                app=app, stage=None, principal=principal, live=live, request=request
            )
        audit.record(
            team=app.team,
            principal=principal,
            action="app.delete",
            obj=app,
            changes={"slug": app.slug, "live_regions": live},
            request=request,
        )
        delete_app_rows(app)
    return None


def rotate_webhook_secret(*, principal: Principal | None, app: App, request=None) -> str:
    """Give ``app`` a new git-push webhook secret; returns it (the only time it is shown in full).
    Raises Forbidden (admin needed)."""
    require(principal, Role.ADMIN, app=app, stage=ALL_STAGES)
    secret = generate_webhook_secret()
    with transaction.atomic():
        app.webhook_secret = secret
        app.save(update_fields=["webhook_secret"])
        audit.record(
            team=app.team, principal=principal, action="app.rotate_webhook_secret", obj=app, request=request
        )
    return secret


# --- Stages -----------------------------------------------------------------------------------


def _app_region_codes(app: App) -> list[str]:
    return list(app.placements.values_list("region__code", flat=True))


def _stage_values(*, app: App, stage: Stage | None, data: dict) -> dict:
    """The checked stage fields of ``data`` (merged over ``stage``'s for cross-field rules)."""
    unknown = set(data) - set(STAGE_FIELDS)
    if unknown:
        raise InvalidStage(f"Unknown stage fields: {', '.join(sorted(unknown))}.")
    if "rollout" in data:
        data["rollout"] = validate_rollout(data["rollout"], region_codes=_app_region_codes(app))
    domain = data.get("domain", stage.domain if stage else "")
    zone = data.get("hosted_zone_id", stage.hosted_zone_id if stage else "")
    if "domain" in data or "hosted_zone_id" in data:
        domain = (domain or "").lower().rstrip(".")
        if "domain" in data:
            data["domain"] = domain
        _check_domain(domain, zone, stage=stage)
    return data


def _apply_pin(stage: Stage, data: dict) -> None:
    if "pinned" not in data:
        return
    if data["pinned"] and not stage.pinned:
        stage.pinned_at = timezone.now()
    elif not data["pinned"]:
        stage.pinned_at = None
        data.setdefault("pinned_reason", "")


def create_stage(
    *, principal: Principal | None, app: App, name: str, data: dict | None = None, request=None
) -> Stage:
    """Add stage ``name`` to ``app`` with any of STAGE_FIELDS. Raises Forbidden (deployer needed,
    with the stage in a stage-limited token's list), InvalidStage, DuplicateStage, InvalidRollout."""
    require(principal, Role.DEPLOYER, app=app, stage=name)
    data = _stage_values(app=app, stage=None, data=dict(data or {}))
    with transaction.atomic():
        if Stage.objects.filter(app=app, name=name).exists():
            raise DuplicateStage(
                f"The app already has a stage '{name}'.", fields={"name": ["Already exists."]}
            )
        stage = Stage(app=app, name=name)
        _apply_pin(stage, data)
        for key, value in data.items():
            setattr(stage, key, value)
        stage.full_clean(validate_unique=False)
        stage.save()
        audit.record(
            team=app.team,
            principal=principal,
            action="stage.create",
            obj=stage,
            changes={"name": name, **{k: getattr(stage, k) for k in STAGE_FIELDS}},
            request=request,
        )
    return stage


def update_stage(*, principal: Principal | None, stage: Stage, data: dict, request=None) -> Stage:
    """Change any of STAGE_FIELDS (the name is the Lambda alias and stays). Pinning records when;
    unpinning clears the reason. Raises Forbidden, InvalidStage, InvalidRollout."""
    require(principal, Role.DEPLOYER, app=stage.app, stage=stage.name)
    if "name" in data and data["name"] != stage.name:
        raise InvalidStage(
            "A stage cannot be renamed: its name is the Lambda alias in every region.",
            fields={"name": ["Cannot be changed."]},
        )
    data = {k: v for k, v in data.items() if k != "name"}
    data = _stage_values(app=stage.app, stage=stage, data=data)
    with transaction.atomic():
        _apply_pin(stage, data)
        changes = {k: [getattr(stage, k), v] for k, v in data.items() if getattr(stage, k) != v}
        for key, value in data.items():
            setattr(stage, key, value)
        if changes:
            stage.full_clean(validate_unique=False)
            stage.save()
            audit.record(
                team=stage.app.team,
                principal=principal,
                action="stage.update",
                obj=stage,
                changes=changes,
                request=request,
            )
    return stage


def delete_stage(
    *, principal: Principal | None, stage: Stage, force: bool = False, request=None
) -> Deployment | None:
    """Delete a stage and its history. A stage that still serves in any region (or whose
    teardown failed) is refused with StageIsLive (409, naming the regions) unless ``force``:
    then a ``teardown`` deployment takes its alias, versions, API stage, domain, DNS record and
    health check down in every region (the function and API too when no other stage is left
    there) and is returned; the stage is deleted once it succeeds. Returns None when the stage
    was deleted at once. Raises Forbidden (admin needed), DeploymentInProgress."""
    require(principal, Role.ADMIN, app=stage.app, stage=stage.name)
    with transaction.atomic():
        running = teardown.active_teardown(app=stage.app, stage=stage)
        if running is not None and force:
            return running  # (a repeated forced delete follows the same teardown)
        _check_no_active_deployment(app=stage.app, stage=stage)
        if teardown.active_teardown(app=stage.app) is not None:
            raise DeploymentInProgress("The app is being taken down; wait for its teardown to finish.")
        live = teardown.live_regions(app=stage.app, stage=stage)
        marked = stage.teardown_started_at is not None
        if (live or marked) and not force:
            raise teardown.StageIsLive(
                (
                    f"Stage '{stage.name}' is live in {', '.join(live)}"
                    if live
                    else f"The last teardown of stage '{stage.name}' did not finish"
                )
                + "; deleting it here would leave it running there. Pass force=true to take it "
                "down first (a teardown deployment), then delete it.",
                extra={"regions": live},
            )
        if (live or marked) and stage.app.placements.exists():
            return teardown.start_teardown(
                app=stage.app, stage=stage, principal=principal, live=live, request=request
            )
        audit.record(
            team=stage.app.team,
            principal=principal,
            action="stage.delete",
            obj=stage,
            changes={"name": stage.name},
            request=request,
        )
        delete_stage_rows(stage)
    return None


# --- Env vars ---------------------------------------------------------------------------------


def _scope(stage: Stage | None) -> str:
    return stage.name if stage is not None else ALL_STAGES


def _check_env_target(*, app: App, stage: Stage | None, region: Region | None) -> None:
    if stage is not None and stage.app_id != app.pk:
        raise InvalidEnvVar(
            f"'{stage.name}' is not a stage of {app.slug}.", fields={"stage": ["Not a stage of this app."]}
        )
    if region is not None and not AppRegion.objects.filter(app=app, region=region).exists():
        raise InvalidEnvVar(
            f"{app.slug} does not run in {region.code}.", fields={"region": ["Not one of the app's regions."]}
        )


def _check_env_size(*, app: App, rows: list) -> None:
    """Raise EnvTooLarge when ``rows`` (the app's env after a write) come to more than Lambda's
    limit in any stage and region of the app."""
    stage_ids: list[Any] = list(app.stages.values_list("pk", flat=True)) or [None]
    region_ids: list[Any] = list(app.placements.values_list("region_id", flat=True)) or [None]
    names = dict(app.stages.values_list("pk", "name"))
    codes = dict(Region.objects.filter(pk__in=[r for r in region_ids if r]).values_list("pk", "code"))
    for stage_id in stage_ids:
        for region_id in region_ids:
            try:
                effective_env(rows, stage_id=stage_id, region_id=region_id)
            except EnvTooLarge as exc:
                where = " in ".join(
                    part
                    for part in (
                        f"stage {names[stage_id]}" if stage_id else "",
                        codes.get(region_id, ""),
                    )
                    if part
                )
                raise EnvTooLarge(f"{where}: {exc.detail}" if where else exc.detail) from None


def _save_env_var(*, env_var: EnvVar, others: list[EnvVar]) -> None:
    duplicate = any(
        o.key == env_var.key and o.stage_id == env_var.stage_id and o.region_id == env_var.region_id
        for o in others
    )
    if duplicate:
        raise DuplicateEnvVar(
            _duplicate_message(env_var), fields={"key": ["Already set for this stage and region."]}
        )
    _check_env_size(app=env_var.app, rows=[*others, env_var])
    try:
        with transaction.atomic():
            env_var.save()
    except IntegrityError:
        # A concurrent write of the same key got there first.
        raise DuplicateEnvVar(
            _duplicate_message(env_var), fields={"key": ["Already set for this stage and region."]}
        )


def _duplicate_message(env_var: EnvVar) -> str:
    where = (
        f"stage {env_var.stage.name}" if env_var.stage_id else "all stages",
        f"region {env_var.region.code}" if env_var.region_id else "all regions",
    )
    return f"{env_var.key} is already set for {where[0]} and {where[1]}; change that one instead."


def _env_audit(env_var: EnvVar, **extra) -> dict:
    return {
        "key": env_var.key,
        "stage": env_var.stage.name if env_var.stage_id else None,
        "region": env_var.region.code if env_var.region_id else None,
        "secret": env_var.secret,
        **extra,
    }


def _lock_env(app: App) -> None:
    # One env write per app at a time: the duplicate and 4 KB checks read all of the app's
    # rows, and two writes checked side by side could together pass the limit.
    App.objects.select_for_update().filter(pk=app.pk).values_list("pk", flat=True).first()


def _check_key(key: str) -> None:
    problem = env_key_problem(key)
    if problem:
        raise InvalidEnvVar(problem, fields={"key": [problem]})


def check_env_var(env_var: EnvVar) -> None:
    """Every rule ``set_env_var`` and ``update_env_var`` apply, for a row about to be saved some
    other way (the Django admin): key, stage and region of the app, no duplicate, Lambda's 4 KB.
    Raises InvalidEnvVar, DuplicateEnvVar or EnvTooLarge."""
    _check_key(env_var.key)
    _check_env_target(app=env_var.app, stage=env_var.stage, region=env_var.region)
    others = list(EnvVar.objects.filter(app=env_var.app).exclude(pk=env_var.pk))
    duplicate = any(
        o.key == env_var.key and o.stage_id == env_var.stage_id and o.region_id == env_var.region_id
        for o in others
    )
    if duplicate:
        raise DuplicateEnvVar(_duplicate_message(env_var))
    _check_env_size(app=env_var.app, rows=[*others, env_var])


def record_env_change(*, env_var: EnvVar, principal: Principal | None, created: bool, request=None) -> None:
    """The audit entry of an env var saved outside these services (keys only, never values)."""
    audit.record(
        team=env_var.app.team,
        principal=principal,
        action="env.create" if created else "env.update",
        obj=env_var,
        changes=_env_audit(env_var),
        request=request,
    )


def set_env_var(
    *,
    principal: Principal | None,
    app: App,
    key: str,
    value: str,
    secret: bool = False,
    stage: Stage | None = None,
    region: Region | None = None,
    request=None,
) -> EnvVar:
    """Create env var ``key`` of ``app``, for ``stage`` (None: all) in ``region`` (None: all).
    It takes effect at the stage's next deployment. Raises Forbidden (deployer needed; a
    stage-limited token may set only its stages' vars), InvalidEnvVar, DuplicateEnvVar,
    EnvTooLarge (naming the largest keys)."""
    require(principal, Role.DEPLOYER, app=app, stage=_scope(stage))
    _check_key(key)
    _check_env_target(app=app, stage=stage, region=region)
    with transaction.atomic():
        _lock_env(app)
        others = list(EnvVar.objects.filter(app=app))
        env_var = EnvVar(app=app, key=key, value=value, secret=secret, stage=stage, region=region)
        _save_env_var(env_var=env_var, others=others)
        audit.record(
            team=app.team,
            principal=principal,
            action="env.create",
            obj=env_var,
            changes=_env_audit(env_var),
            request=request,
        )
    return env_var


_UNSET: Any = object()


def update_env_var(
    *,
    principal: Principal | None,
    env_var: EnvVar,
    key: str = _UNSET,
    value: str = _UNSET,
    secret: bool = _UNSET,
    stage: Stage | None = _UNSET,
    region: Region | None = _UNSET,
    request=None,
) -> EnvVar:
    """Change any of ``key``, ``value``, ``secret``, ``stage``, ``region`` (omitted: unchanged).
    Making a secret var non-secret needs a new ``value`` too, so no one can reveal a secret by
    flipping the flag. Raises what ``set_env_var`` raises."""
    app = env_var.app
    require(principal, Role.DEPLOYER, app=app, stage=_scope(env_var.stage))
    if stage is not _UNSET:
        require(principal, Role.DEPLOYER, app=app, stage=_scope(stage))
    if secret is False and env_var.secret and value is _UNSET:
        raise InvalidEnvVar(
            "To make a secret env var non-secret, set its value in the same request.",
            fields={"value": ["Required when 'secret' changes to false."]},
        )
    updates = {
        name: v
        for name, v in (
            ("key", key),
            ("value", value),
            ("secret", secret),
            ("stage", stage),
            ("region", region),
        )
        if v is not _UNSET
    }
    if "key" in updates:
        _check_key(updates["key"])
    _check_env_target(
        app=app, stage=updates.get("stage", env_var.stage), region=updates.get("region", env_var.region)
    )
    with transaction.atomic():
        _lock_env(app)
        others = list(EnvVar.objects.filter(app=app).exclude(pk=env_var.pk))
        before = _env_audit(env_var)
        changed = []
        for name, v in updates.items():
            if name == "value" or getattr(env_var, name) != v:
                changed.append(name)
            setattr(env_var, name, v)
        if not changed:
            return env_var
        _save_env_var(env_var=env_var, others=others)
        audit.record(
            team=app.team,
            principal=principal,
            action="env.update",
            obj=env_var,
            changes=_env_audit(env_var, changed=sorted(changed), before=before),
            request=request,
        )
    return env_var


def delete_env_var(*, principal: Principal | None, env_var: EnvVar, request=None) -> None:
    """Delete an env var; it disappears at the stage's next deployment. Raises Forbidden."""
    require(principal, Role.DEPLOYER, app=env_var.app, stage=_scope(env_var.stage))
    with transaction.atomic():
        audit.record(
            team=env_var.app.team,
            principal=principal,
            action="env.delete",
            obj=env_var,
            changes=_env_audit(env_var),
            request=request,
        )
        env_var.delete()
