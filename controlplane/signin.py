"""Sign-in attempts limited with django-axes: after AXES_FAILURE_LIMIT failures for one username
from one address, or from one address whatever the usernames, sign-ins from there are refused
until AXES_COOLOFF_TIME has passed (a success resets the count). The web UI's and the Django
admin's login pages are covered; API tokens and the OIDC exchange never call ``authenticate()``
and are not."""

from __future__ import annotations

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse


class SignInAttemptsBackend(AxesStandaloneBackend):
    """axes' lockout check, first among AUTHENTICATION_BACKENDS (ModelBackend checks the password).
    ``authenticate()`` without a request (a management shell, a script on the server) has no
    address to count and is left to the next backend."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def lockout_message() -> str:
    minutes = max(1, round(settings.AXES_COOLOFF_TIME.total_seconds() / 60))
    return f"Too many failed sign-ins; try again in {minutes} minute{'s' if minutes != 1 else ''}."


def lockout_response(request: HttpRequest, original_response=None, credentials=None) -> HttpResponse:
    """The login page again (the UI's or the admin's), with the lockout message, as a 429."""
    form = AuthenticationForm(request, data=None)
    message = lockout_message()
    if request.path.startswith("/admin/"):
        context = {
            **admin.site.each_context(request),
            "title": "Log in",
            "app_path": request.get_full_path(),
            "form": form,
            "username": request.POST.get("username", ""),
            "locked_out": message,
        }
        response = TemplateResponse(request, "admin/locked_out.html", context, status=429)
    else:
        context = {"form": form, "next": request.POST.get("next", ""), "locked_out": message}
        response = TemplateResponse(request, "registration/login.html", context, status=429)
    response["Retry-After"] = str(int(settings.AXES_COOLOFF_TIME.total_seconds()))
    return response.render()
