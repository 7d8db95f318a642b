"""What every UI view shares: the ``page`` decorator (sign-in, HTML errors), the ``action``
decorator (POST only, role checks, domain errors shown as messages) and small formatting helpers."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import wraps
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.utils import timezone

from controlplane.access import Principal, principal_for
from controlplane.errors import DomainError, Forbidden, NotFound
from regions.health import probe_lease

from .. import selectors
from ..models import App

# Human words for the statuses the engine stores (the API keeps the raw values).
STATUS_LABELS = {
    "queued": "Queued",
    "running": "Running",
    "succeeded": "Succeeded",
    "failed": "Failed",
    "partially_failed": "Partly failed",
    "rolled_back": "Rolled back",
    "cancelled": "Cancelled",
    "superseded": "Superseded",
    "skipped": "Skipped",
    "up": "Up",
    "down": "Down",
    "unknown": "Unknown",
    "sent": "Sent",
    "pending": "Pending",
}


def status_label(status: str) -> str:
    return STATUS_LABELS.get(status, (status or "").replace("_", " ").capitalize())


def render_error(request: HttpRequest, status: int, title: str, detail: str, **context) -> HttpResponse:
    return render(
        request,
        "deployments/error.html",
        {"status": status, "title": title, "detail": detail, **context},
        status=status,
    )


def page(*methods: str):
    """A UI view answering ``methods``: signed-in users only; domain errors and refused methods
    become HTML pages (the API answers JSON for the same errors)."""
    allowed = [m.upper() for m in methods] or ["GET"]

    def decorate(view):
        @wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method not in allowed and not (request.method == "HEAD" and "GET" in allowed):
                response = render_error(
                    request,
                    405,
                    "Method not allowed",
                    f"This address answers {', '.join(allowed)} only.",
                )
                return HttpResponseNotAllowed(allowed, content=response.content)
            try:
                return view(request, *args, **kwargs)
            except selectors.AmbiguousApp:
                return _ambiguous_app(request, kwargs["app"])
            except NotFound as exc:
                return render_error(request, 404, "Not found", exc.detail)
            except Http404:
                return render_error(
                    request, 404, "Not found", "There is nothing here, or it is not yours to see."
                )
            except Forbidden:
                return render_error(
                    request, 403, "Not allowed", "Your role in this team does not allow that."
                )

        return login_required(wrapper)

    return decorate


def _not_a_refusal(exc: DomainError) -> None:
    """A missing role is not a refusal to show on the page: it goes on to the page's 403."""
    if isinstance(exc, Forbidden):
        raise exc


def refused(request: HttpRequest, what: str, exc: DomainError) -> None:
    """Show a service's refusal as a message (a Forbidden is raised on, to the 403 page)."""
    _not_a_refusal(exc)
    messages.error(request, f"{what} refused: {exc.detail}")


def form_errors(form, exc: DomainError) -> None:
    """Show a service's refusal on the form: on the fields it names, else at the top (a
    Forbidden is raised on, to the 403 page)."""
    _not_a_refusal(exc)
    placed = False
    for name, problems in (exc.fields or {}).items():
        if name in form.fields:
            for problem in problems if isinstance(problems, list) else [problems]:
                form.add_error(name, str(problem))
            placed = True
    if not placed:
        form.add_error(None, exc.detail)


def _ambiguous_app(request: HttpRequest, slug: str) -> HttpResponse:
    """Several of the user's own teams have an app ``slug``: a 404 offering one link per team."""
    teams = (
        App.objects.visible_to(principal_for(request))
        .filter(slug=slug)
        .select_related("team")
        .order_by("team__slug")
    )
    choices = [
        {"team": app.team, "url": f"{request.path}?{urlencode({'team': app.team.slug})}"} for app in teams
    ]
    return render_error(
        request, 404, "Which team?", f"Several of your teams have an app '{slug}'. Pick one:", choices=choices
    )


def team_query(team: str | None) -> str:
    return f"?{urlencode({'team': team})}" if team else ""


def find_app(request: HttpRequest, slug: str) -> tuple[App, str]:
    """The app ``slug`` the user sees (``?team=`` when several of their teams have one), and the
    query string that keeps naming that team in the page's links and forms."""
    principal = principal_for(request)
    team = request.GET.get("team") or None
    app = selectors.app_for(principal=principal, slug=slug, team=team, queryset=selectors.apps_for(principal))
    return app, team_query(team)


def app_query(principal: Principal, app: App) -> str:
    """``?team=<slug>`` when the user sees more than one app with ``app``'s slug, else ``""``."""
    if App.objects.visible_to(principal).filter(slug=app.slug).count() > 1:
        return team_query(app.team.slug)
    return ""


def duration(start: datetime | None, end: datetime | None = None) -> str:
    """``"1h 02m"``, ``"3m 05s"``, ``"12s"``; until now when ``end`` is None; ``""`` without a start."""
    if start is None:
        return ""
    seconds = max(0, int(((end or timezone.now()) - start).total_seconds()))
    return human_seconds(seconds)


def human_seconds(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def safe_url(url: str) -> str:
    """``url`` if it is a plain web link (commit and compare URLs come from git hosts and CI)."""
    return url if url.startswith(("https://", "http://")) else ""


def commit_of(obj) -> dict:
    """The commit a deployment or release carries, ready to show."""
    message = (obj.commit_message or "").strip()
    return {
        "sha": obj.commit_sha,
        "short_sha": obj.commit_sha[:7],
        "title": message.splitlines()[0] if message else "",
        "message": message,
        "author": obj.commit_author,
        "branch": obj.commit_branch,
        "url": safe_url(obj.commit_url),
    }


def trigger_words(deployment) -> str:
    """Who started ``deployment``, in words: a user's name, a token's name, "push by <author>"."""
    raw = deployment.triggered_by or ""
    kind, _, rest = raw.partition(":")
    if kind == "user":
        user = deployment.user if deployment.user_id else None
        full = user.get_full_name() if user is not None else ""
        return f"{full} ({rest})" if full else rest
    if kind == "token":
        name, _, prefix = rest.rpartition(" (")
        return f"API token “{name or rest}”"
    if kind == "webhook":
        host = {"github": "GitHub", "gitlab": "GitLab"}.get(rest, rest)
        author = deployment.commit_author
        return f"push by {author} ({host})" if author else f"push ({host})"
    if kind == "oidc":
        return f"CI identity {rest}"
    return raw or "unknown"


def probe_time(value: datetime | None) -> datetime | None:
    """While a probe round holds a placement, ``last_probe_at`` is the claim's expiry (see
    ``regions.api.health.LastProbeField``): show when that round started instead."""
    if value is not None and value > timezone.now():
        return value - timedelta(seconds=probe_lease())
    return value


def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for ``/favicon.ico`` whatever the page says: send them to the static icon."""
    return redirect(static("deployments/favicon.svg"), permanent=True)
