"""The team web UI's team pages: alert channels (and their deliveries), API tokens, the audit log.

Reads go through the selectors the API uses and writes through the same services, which check
the role (admins manage channels and tokens; every member reads channels and the audit log).
"""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from deployments.models import App
from deployments.views.common import form_errors, page, refused

from . import notify, selectors
from .access import principal_for
from .channels import backend_for
from .channels import services as channel_services
from .choices import ChannelKind, Role
from .errors import DomainError, Forbidden, NotFound
from .models import ApiToken, AuditEntry, Channel, Notification
from .services import create_api_token, revoke_api_token

AUDIT_PER_PAGE = 50
DELIVERIES_SHOWN = 10


def _admin_teams(principal):
    return [t for t in principal.teams().order_by("slug") if principal.can(Role.ADMIN, team_id=t.pk)]


# --- Channels -----------------------------------------------------------------------------------


class ChannelForm(forms.Form):
    team = forms.ChoiceField()
    kind = forms.ChoiceField(choices=ChannelKind.choices)
    name = forms.CharField(max_length=100, required=False)
    target = forms.CharField(
        max_length=2000, help_text="Slack or webhook URL, an email address, or an E.164 phone number."
    )
    events = forms.MultipleChoiceField(
        choices=[(e, e.replace("_", " ")) for e in channel_services.SUBSCRIBABLE_EVENTS],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="None checked: every event.",
    )
    apps = forms.CharField(required=False, help_text="App slugs separated by commas; empty: every app.")

    def __init__(self, *args, teams=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].choices = [(t.slug, t.name or t.slug) for t in teams]


def _channel(principal, pk: int) -> Channel:
    channel = Channel.objects.visible_to(principal).select_related("team").filter(pk=pk).first()
    if channel is None:
        raise NotFound(f"No channel {pk}.")
    return channel


@page("GET", "POST")
def channel_list(request: HttpRequest) -> HttpResponse:
    """The alert channels of the user's teams, their recent deliveries; admins add channels."""
    principal = principal_for(request)
    admin_teams = _admin_teams(principal)
    form = ChannelForm(request.POST or None, teams=admin_teams)
    secret = ""
    if request.method == "POST":
        if not admin_teams:
            raise Forbidden("Only team admins add channels.")
        if form.is_valid():
            team = next(t for t in admin_teams if t.slug == form.cleaned_data["team"])
            apps = [a.strip() for a in form.cleaned_data["apps"].split(",") if a.strip()]
            try:
                channel, secret = channel_services.create_channel(
                    principal=principal, team=team, kind=form.cleaned_data["kind"],
                    target=form.cleaned_data["target"].strip(), name=form.cleaned_data["name"],
                    events=form.cleaned_data["events"] or None, apps=apps, request=request,
                )  # fmt: skip
            except DomainError as exc:
                form_errors(form, exc)
            else:
                messages.success(request, f"Channel {channel.name or channel.kind} added.")
                if not secret:
                    return redirect("ui:channels")
                form = ChannelForm(teams=admin_teams)
    recent = Notification.objects.order_by("-id")
    channels = list(
        Channel.objects.visible_to(principal)
        .select_related("team")
        .prefetch_related(
            Prefetch("apps", queryset=principal.filter_apps(App.objects.all())),
            Prefetch(
                "notifications",
                queryset=recent.select_related("app")[:DELIVERIES_SHOWN],
                to_attr="deliveries",
            ),
        )
        .order_by("team__slug", "-id")
    )
    rows = [
        {
            "channel": c,
            "target": backend_for(c.kind).mask(c.target),
            "deliveries": c.deliveries,
            "can_admin": principal.can(Role.ADMIN, team_id=c.team_id),
        }
        for c in channels
    ]
    return render(
        request,
        "controlplane/channels.html",
        {"rows": rows, "form": form if admin_teams else None, "signing_secret": secret},
    )


@page("POST")
def channel_test(request: HttpRequest, pk: int) -> HttpResponse:
    principal = principal_for(request)
    channel = _channel(principal, pk)
    if not principal.can(Role.ADMIN, team_id=channel.team_id):
        raise Forbidden("Only team admins send test messages.")
    row = notify.send_test(channel=channel)
    if row.status == "sent":
        messages.success(request, f"Test message sent to {channel.name or channel.kind}.")
    else:
        messages.error(request, f"Test message failed: {row.error or row.status}")
    return redirect("ui:channels")


@page("POST")
def channel_toggle(request: HttpRequest, pk: int) -> HttpResponse:
    """Disable an enabled channel, or enable a disabled one."""
    principal = principal_for(request)
    channel = _channel(principal, pk)
    enabled = request.POST.get("enabled") == "true"
    try:
        channel_services.update_channel(
            principal=principal, channel=channel, data={"enabled": enabled}, request=request
        )
    except DomainError as exc:
        refused(request, "Changing the channel", exc)
    else:
        messages.success(
            request, f"Channel {channel.name or channel.kind} {'enabled' if enabled else 'disabled'}."
        )
    return redirect("ui:channels")


@page("POST")
def channel_delete(request: HttpRequest, pk: int) -> HttpResponse:
    principal = principal_for(request)
    channel = _channel(principal, pk)
    channel_services.delete_channel(principal=principal, channel=channel, request=request)
    messages.success(request, f"Channel {channel.name or channel.kind} deleted.")
    return redirect("ui:channels")


# --- API tokens ---------------------------------------------------------------------------------


class TokenForm(forms.Form):
    team = forms.ChoiceField()
    name = forms.CharField(max_length=100)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.DEPLOYER)
    app = forms.CharField(
        required=False, max_length=40, help_text="An app slug to limit it to; empty: team-wide."
    )
    stages = forms.CharField(required=False, help_text="Stages to limit it to, separated by commas.")
    expires_at = forms.DateTimeField(
        required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}), help_text="UTC"
    )

    def __init__(self, *args, teams=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].choices = [(t.slug, t.name or t.slug) for t in teams]


@page("GET", "POST")
def token_list(request: HttpRequest) -> HttpResponse:
    """The tokens of the teams the user administers; create one (its value shown this once)."""
    principal = principal_for(request)
    teams = _admin_teams(principal)
    if not teams:
        raise Forbidden("Only team admins see the team's tokens.")
    form = TokenForm(request.POST or None, teams=teams)
    raw = ""
    if request.method == "POST" and form.is_valid():
        team = next(t for t in teams if t.slug == form.cleaned_data["team"])
        app = None
        if form.cleaned_data["app"]:
            app = App.objects.visible_to(principal).filter(team=team, slug=form.cleaned_data["app"]).first()
            if app is None:
                form.add_error("app", "No such app in this team.")
        if form.is_valid():
            stages = [s.strip() for s in form.cleaned_data["stages"].split(",") if s.strip()]
            try:
                token, raw = create_api_token(
                    team=team, name=form.cleaned_data["name"], role=form.cleaned_data["role"], app=app,
                    stages=stages, expires_at=form.cleaned_data["expires_at"], created_by=request.user,
                    principal=principal, request=request,
                )  # fmt: skip
            except DomainError as exc:
                form_errors(form, exc)
            else:
                messages.success(request, f"Token {token.name} created. Copy it now: it is not shown again.")
                form = TokenForm(teams=teams)
    tokens = list(
        selectors.tokens_for(principal).filter(team__in=teams).select_related("created_by").order_by("-id")
    )
    return render(request, "controlplane/tokens.html", {"tokens": tokens, "form": form, "raw": raw})


@page("POST")
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    principal = principal_for(request)
    token = ApiToken.objects.filter(team_id__in=principal.team_ids(), pk=pk).select_related("team").first()
    if token is None:
        raise NotFound(f"No token {pk}.")
    revoke_api_token(token=token, principal=principal, request=request)
    messages.success(request, f"Token {token.name} revoked: it no longer authenticates.")
    return redirect("ui:tokens")


# --- Audit log ----------------------------------------------------------------------------------


@page("GET")
def audit_log(request: HttpRequest) -> HttpResponse:
    """The audit log of the user's teams, filtered by team, app, action and actor."""
    principal = principal_for(request)
    f = {k: (request.GET.get(k) or "").strip()[:100] for k in ("team", "app", "action", "actor")}
    qs = selectors.audit_entries_for(principal, team=f["team"] or None)
    if f["app"]:
        qs = qs.filter(app__slug=f["app"])
    if f["action"]:
        qs = qs.filter(action__startswith=f["action"])
    if f["actor"]:
        qs = qs.filter(actor__icontains=f["actor"])
    try:
        number = max(1, min(int(request.GET.get("page") or 1), 100000))
    except ValueError:
        number = 1
    start = (number - 1) * AUDIT_PER_PAGE
    entries = list(qs.order_by("-id")[start : start + AUDIT_PER_PAGE + 1])
    params = {k: v for k, v in f.items() if v}
    actions = sorted(
        {
            a.split(".")[0]
            for a in AuditEntry.objects.filter(team_id__in=principal.team_ids())
            .values_list("action", flat=True)
            .distinct()[:200]
        }
    )
    return render(
        request,
        "controlplane/audit.html",
        {
            "entries": entries[:AUDIT_PER_PAGE],
            "filters": f,
            "teams": principal.teams().order_by("slug"),
            "actions": actions,
            "next_url": "?" + urlencode({**params, "page": number + 1})
            if len(entries) > AUDIT_PER_PAGE
            else "",
            "prev_url": "?" + urlencode({**params, "page": number - 1}) if number > 1 else "",
        },
    )
