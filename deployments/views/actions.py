"""The team web UI's actions: each a CSRF-protected POST that checks the role the API checks and
calls the service the API calls. A refusal is shown (as a message, or on the form) and changes
nothing; no view writes a row itself."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from controlplane.access import principal_for, require
from controlplane.choices import Role
from controlplane.errors import DomainError, Forbidden, NotFound
from regions.models import Region

from .. import selectors
from ..artifacts import store_artifact
from ..models import App, Deployment, EnvVar, Release
from ..services import apps as app_services
from ..services import teardown
from ..services.deployments import cancel_deployment, create_deployment, promote
from ..services.rollback import rollback
from .common import find_app, form_errors, page, refused
from .forms import AppForm, DeployForm, EnvVarForm, PromoteForm, StageForm


def _app_url(app: App, query: str) -> str:
    return reverse("ui:app", args=[app.slug]) + query


def _env_url(app: App, query: str) -> str:
    return reverse("ui:env", args=[app.slug]) + query


def _visible_deployment(request: HttpRequest, pk: int) -> Deployment:
    deployment = (
        Deployment.objects.filter(app__in=App.objects.visible_to(principal_for(request)), pk=pk)
        .select_related("app__team", "stage", "release", "previous_release")
        .first()
    )
    if deployment is None:
        raise NotFound(f"No deployment {pk}.")
    return deployment


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{k}: {' '.join(v)}" if k != "__all__" else " ".join(v)
        for k, v in getattr(exc, "message_dict", {"__all__": exc.messages}).items()
    )


# --- Apps and stages ----------------------------------------------------------------------------


@page("GET", "POST")
def app_create(request: HttpRequest) -> HttpResponse:
    """A new app in one of the teams the user administers, placed in the regions chosen."""
    principal = principal_for(request)
    teams = [t for t in principal.teams().order_by("slug") if principal.can(Role.ADMIN, team_id=t.pk)]
    if not teams:
        raise Forbidden("Only team admins create apps.")
    regions = [
        (r.code, r.code + (f" — {r.name}" if r.name else "")) for r in Region.objects.filter(enabled=True)
    ]
    form = AppForm(request.POST or None, teams=[(t.slug, t.name or t.slug) for t in teams], regions=regions)
    if request.method == "POST" and form.is_valid():
        team = next(t for t in teams if t.slug == form.cleaned_data["team"])
        try:
            app = app_services.create_app(
                principal=principal, team=team, data=form.service_data(), request=request
            )
        except DomainError as exc:
            form_errors(form, exc)
        except ValidationError as exc:
            form.add_error(None, _validation_message(exc))
        else:
            messages.success(
                request, f"App {app.slug} created in {len(form.cleaned_data['regions'])} region(s)."
            )
            query = f"?team={team.slug}" if len(teams) > 1 else ""
            return redirect(_app_url(app, query) + "#stages")
    return render(request, "deployments/app_form.html", {"form": form})


@page("GET", "POST")
def stage_form(request: HttpRequest, app: str, stage: str | None = None) -> HttpResponse:
    """Add a stage (``stage`` None) or edit one: branch, domain, rollout waves, bake, failure
    policy, canary. The services' validation errors are shown on the form."""
    principal = principal_for(request)
    obj, query = find_app(request, app)
    target = selectors.stage_for(app=obj, name=stage) if stage else None
    creating = target is None
    if not creating:
        require(principal, Role.DEPLOYER, app=obj, stage=target.name)
    elif not principal.can(Role.DEPLOYER, app=obj):
        raise Forbidden("Deployers add stages.")
    initial = StageForm.initial_for(target) if target else {}
    form = StageForm(request.POST or None, initial=initial, creating=creating)
    if request.method == "POST" and form.is_valid():
        try:
            data = form.service_data()
            if creating:
                saved = app_services.create_stage(
                    principal=principal,
                    app=obj,
                    name=form.cleaned_data["name"].strip(),
                    data=data,
                    request=request,
                )
            else:
                saved = app_services.update_stage(
                    principal=principal, stage=target, data=data, request=request
                )
        except DomainError as exc:
            form_errors(form, exc)
        except ValidationError as exc:
            form.add_error(None, _validation_message(exc))
        else:
            messages.success(request, f"Stage {saved.name} {'added' if creating else 'saved'}.")
            return redirect(_app_url(obj, query) + "#stages")
    return render(
        request,
        "deployments/stage_form.html",
        {
            "app": obj,
            "team_query": query,
            "stage": target,
            "form": form,
            "regions": [p.region.code for p in obj.placements.all()],
        },
    )


@page("POST")
def stage_unpin(request: HttpRequest, app: str, stage: str) -> HttpResponse:
    """Unpin ``stage`` so git pushes deploy it again (the stage PATCH API's service)."""
    principal = principal_for(request)
    obj, query = find_app(request, app)
    target = selectors.stage_for(app=obj, name=stage)
    require(principal, Role.DEPLOYER, app=obj, stage=target.name)
    if not target.pinned:
        messages.info(request, f"{target.name} is not pinned.")
    else:
        try:
            app_services.update_stage(
                principal=principal, stage=target, data={"pinned": False}, request=request
            )
        except DomainError as exc:
            refused(request, f"Unpinning {target.name}", exc)
        else:
            messages.success(request, f"{target.name} is unpinned: git pushes deploy it again.")
    return redirect(_app_url(obj, query))


# --- Deploy, promote, roll back, cancel ---------------------------------------------------------


@page("POST")
def deploy(request: HttpRequest, app: str) -> HttpResponse:
    """Upload a zip and deploy it, or redeploy an existing release, to a stage."""
    principal = principal_for(request)
    obj, query = find_app(request, app)
    require(principal, Role.DEPLOYER, app=obj)
    stages = [(s.name, s.name) for s in obj.stages.all()]
    form = DeployForm(request.POST, request.FILES, stages=stages)
    if not form.is_valid():
        problems = "; ".join(e for errs in form.errors.values() for e in errs)
        messages.error(request, f"Deploy refused: {problems}")
        return redirect(_app_url(obj, query))
    target = selectors.stage_for(app=obj, name=form.cleaned_data["stage"])
    require(principal, Role.DEPLOYER, app=obj, stage=target.name)
    try:
        artifact = release = None
        if form.cleaned_data.get("file"):
            artifact = store_artifact(
                app=obj, fileobj=form.cleaned_data["file"], principal=principal, request=request
            )
        else:
            release = Release.objects.filter(app=obj, pk=form.cleaned_data["release"]).first()
            if release is None:
                raise NotFound("No such release of this app.")
        note = form.cleaned_data.get("commit_message") or ""
        deployment = create_deployment(
            app=obj,
            stage=target,
            principal=principal,
            artifact=artifact,
            release=release,
            commit={"message": note} if note else None,
            force=form.cleaned_data["force"],
        )
    except DomainError as exc:
        refused(request, "Deploy", exc)
        return redirect(_app_url(obj, query))
    what = f"release #{release.number}" if release else "the uploaded zip"
    messages.success(request, f"Deploying {what} to {target.name}.")
    return redirect("ui:deployment", pk=deployment.pk)


@page("POST")
def promote_stage(request: HttpRequest, app: str) -> HttpResponse:
    """Ship the release one stage runs to another, without rebuilding."""
    principal = principal_for(request)
    obj, query = find_app(request, app)
    require(principal, Role.DEPLOYER, app=obj)
    stages = [(s.name, s.name) for s in obj.stages.all()]
    form = PromoteForm(request.POST, stages=stages)
    if not form.is_valid():
        messages.error(request, "Promote refused: choose two stages of this app.")
        return redirect(_app_url(obj, query))
    source = selectors.stage_for(app=obj, name=form.cleaned_data["from_stage"])
    target = selectors.stage_for(app=obj, name=form.cleaned_data["to_stage"])
    require(principal, Role.DEPLOYER, app=obj, stage=target.name)
    try:
        deployment = promote(
            app=obj, from_stage=source, to_stage=target, principal=principal,
            force=form.cleaned_data["force"], request=request,
        )  # fmt: skip
    except DomainError as exc:
        refused(request, f"Promote of {source.name} to {target.name}", exc)
        return redirect(_app_url(obj, query))
    messages.success(request, f"Promoting {source.name} to {target.name}.")
    return redirect("ui:deployment", pk=deployment.pk)


@page("POST")
def stage_rollback(request: HttpRequest, app: str, stage: str) -> HttpResponse:
    """Roll ``stage`` back to the release named by ``to`` (any kept release), or the previous
    one. A plan that refuses (nothing earlier, a pruned version) says why and changes nothing."""
    principal = principal_for(request)
    obj, query = find_app(request, app)
    target = selectors.stage_for(app=obj, name=stage)
    require(principal, Role.DEPLOYER, app=obj, stage=target.name)
    to = (request.POST.get("to") or "").strip() or None
    try:
        deployment = rollback(app=obj, stage=target, principal=principal, to=to, request=request)
    except DomainError as exc:
        refused(request, f"Rollback of {target.name}", exc)
        return redirect(_app_url(obj, query))
    messages.success(
        request,
        f"Rolling {target.name} back to release #{deployment.release.number}. "
        "The stage is pinned until someone unpins it.",
    )
    return redirect("ui:deployment", pk=deployment.pk)


@page("POST")
def deployment_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    """Cancel a queued or running deployment: regions not started stay unstarted."""
    principal = principal_for(request)
    deployment = _visible_deployment(request, pk)
    require(principal, Role.DEPLOYER, app=deployment.app, stage=deployment.stage.name)
    try:
        cancel_deployment(deployment=deployment, principal=principal)
    except DomainError as exc:
        refused(request, "Cancel", exc)
    else:
        messages.success(request, "Cancel requested: regions not started will not start.")
    return redirect("ui:deployment", pk=deployment.pk)


@page("POST")
def deployment_retry(request: HttpRequest, pk: int) -> HttpResponse:
    """Deploy the same release to the same stage again (a new deployment)."""
    principal = principal_for(request)
    old = _visible_deployment(request, pk)
    require(principal, Role.DEPLOYER, app=old.app, stage=old.stage.name)
    if old.release_id is None:
        messages.error(request, "Retry refused: this deployment never built a release.")
        return redirect("ui:deployment", pk=old.pk)
    try:
        deployment = create_deployment(
            app=old.app, stage=old.stage, principal=principal, release=old.release,
            force=request.POST.get("force") == "on",
        )  # fmt: skip
    except DomainError as exc:
        refused(request, "Retry", exc)
        return redirect("ui:deployment", pk=old.pk)
    messages.success(request, f"Retrying release #{old.release.number} on {old.stage.name}.")
    return redirect("ui:deployment", pk=deployment.pk)


def _confirm_delete(request, *, obj: App, query: str, what: str, live: list[str], marked: bool, action: str):
    return render(
        request,
        "deployments/confirm_delete.html",
        {"app": obj, "team_query": query, "what": what, "live": live, "marked": marked, "action": action},
    )


@page("GET", "POST")
def stage_delete(request: HttpRequest, app: str, stage: str) -> HttpResponse:
    """Delete a stage (admins). GET asks to confirm, naming the regions it still serves in; a
    live stage is refused unless "take it down first" is ticked: then a teardown deployment
    takes it down in every region and the stage goes once it succeeds."""
    principal = principal_for(request)
    obj, query = find_app(request, app)
    target = selectors.stage_for(app=obj, name=stage)
    require(principal, Role.ADMIN, app=obj, stage=target.name)
    live = teardown.live_regions(app=obj, stage=target)
    if request.method == "GET":
        return _confirm_delete(
            request, obj=obj, query=query, what=f"stage {target.name}", live=live,
            marked=target.teardown_started_at is not None,
            action=reverse("ui:stage-delete", args=[obj.slug, target.name]) + query,
        )  # fmt: skip
    try:
        deployment = app_services.delete_stage(
            principal=principal, stage=target, force=request.POST.get("force") == "on", request=request
        )
    except DomainError as exc:
        refused(request, f"Deleting stage {target.name}", exc)
        return redirect(_app_url(obj, query))
    if deployment is None:
        messages.success(request, f"Stage {target.name} deleted.")
        return redirect(_app_url(obj, query))
    messages.success(
        request, f"Taking stage {target.name} down in every region; it is deleted once that succeeds."
    )
    return redirect("ui:deployment", pk=deployment.pk)


@page("GET", "POST")
def app_delete(request: HttpRequest, app: str) -> HttpResponse:
    """Delete an app (admins), as :func:`stage_delete` does a stage: every stage, the function
    and its API are taken down first when "take it down first" is ticked."""
    principal = principal_for(request)
    obj, query = find_app(request, app)
    require(principal, Role.ADMIN, app=obj)
    live = teardown.live_regions(app=obj)
    if request.method == "GET":
        return _confirm_delete(
            request, obj=obj, query=query, what=f"app {obj.slug}", live=live,
            marked=obj.stages.filter(teardown_started_at__isnull=False).exists(),
            action=reverse("ui:app-delete", args=[obj.slug]) + query,
        )  # fmt: skip
    try:
        deployment = app_services.delete_app(
            principal=principal, app=obj, force=request.POST.get("force") == "on", request=request
        )
    except DomainError as exc:
        refused(request, f"Deleting app {obj.slug}", exc)
        return redirect(_app_url(obj, query))
    if deployment is None:
        messages.success(request, f"App {obj.slug} deleted.")
        return redirect("ui:home")
    messages.success(
        request, f"Taking app {obj.slug} down in every region; it is deleted once that succeeds."
    )
    return redirect("ui:deployment", pk=deployment.pk)


# --- Env vars -----------------------------------------------------------------------------------


def _env_scope(obj: App, form: EnvVarForm):
    stage = (
        selectors.stage_for(app=obj, name=form.cleaned_data["stage"]) if form.cleaned_data["stage"] else None
    )
    region = None
    if form.cleaned_data["region"]:
        region = Region.objects.filter(code=form.cleaned_data["region"]).first()
    return stage, region


def _env_form(obj: App, data=None, **kwargs) -> EnvVarForm:
    return EnvVarForm(
        data,
        stages=[s.name for s in obj.stages.all()],
        regions=[p.region.code for p in obj.placements.all()],
        **kwargs,
    )


@page("POST")
def env_create(request: HttpRequest, app: str) -> HttpResponse:
    principal = principal_for(request)
    obj, query = find_app(request, app)
    require(principal, Role.DEPLOYER, app=obj)
    form = _env_form(obj, request.POST)
    if form.is_valid():
        stage, region = _env_scope(obj, form)
        try:
            app_services.set_env_var(
                principal=principal, app=obj, key=form.cleaned_data["key"].strip(),
                value=form.cleaned_data["value"], secret=form.cleaned_data["secret"],
                stage=stage, region=region, request=request,
            )  # fmt: skip
        except DomainError as exc:
            refused(request, "Adding the env var", exc)
        else:
            messages.success(
                request,
                f"{form.cleaned_data['key']} saved. It takes effect at the next deploy of the stage "
                "(or ship it now with a config deploy).",
            )
    else:
        messages.error(
            request, "Env var refused: " + "; ".join(e for errs in form.errors.values() for e in errs)
        )
    return redirect(_env_url(obj, query))


def _env_var(obj: App, env_id: int) -> EnvVar:
    env_var = selectors.env_vars_of(app=obj).filter(pk=env_id).first()
    if env_var is None:
        raise NotFound(f"No env var {env_id} in {obj.slug}.")
    return env_var


@page("GET", "POST")
def env_edit(request: HttpRequest, app: str, env_id: int) -> HttpResponse:
    """Edit an env var: key, value, scope, secret. A secret's value is never put in the form;
    an empty value keeps it."""
    principal = principal_for(request)
    obj, query = find_app(request, app)
    env_var = _env_var(obj, env_id)
    require(principal, Role.DEPLOYER, app=obj, stage=env_var.stage.name if env_var.stage_id else None)
    initial = {
        "key": env_var.key,
        "value": "" if env_var.secret else env_var.value,
        "secret": env_var.secret,
        "stage": env_var.stage.name if env_var.stage_id else "",
        "region": env_var.region.code if env_var.region_id else "",
    }
    form = _env_form(obj, request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        stage, region = _env_scope(obj, form)
        changes = {
            "key": form.cleaned_data["key"].strip(),
            "secret": form.cleaned_data["secret"],
            "stage": stage,
            "region": region,
        }
        if form.cleaned_data["value"] or not env_var.secret:
            changes["value"] = form.cleaned_data["value"]
        try:
            app_services.update_env_var(principal=principal, env_var=env_var, request=request, **changes)
        except DomainError as exc:
            form_errors(form, exc)
        else:
            messages.success(request, f"{changes['key']} saved. It takes effect at the stage's next deploy.")
            return redirect(_env_url(obj, query))
    return render(
        request,
        "deployments/env_form.html",
        {"app": obj, "team_query": query, "env_var": env_var, "form": form},
    )


@page("POST")
def env_delete(request: HttpRequest, app: str, env_id: int) -> HttpResponse:
    principal = principal_for(request)
    obj, query = find_app(request, app)
    env_var = _env_var(obj, env_id)
    require(principal, Role.DEPLOYER, app=obj, stage=env_var.stage.name if env_var.stage_id else None)
    key = env_var.key
    try:
        app_services.delete_env_var(principal=principal, env_var=env_var, request=request)
    except DomainError as exc:
        refused(request, f"Deleting {key}", exc)
    else:
        messages.success(request, f"{key} deleted. It goes away at the stage's next deploy.")
    return redirect(_env_url(obj, query))
