"""Create an API token for CI; the raw token is the last line of the output (``| tail -1``)."""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from controlplane import services
from controlplane.choices import Role
from deployments.models import App, stage_name_validator


class Command(BaseCommand):
    help = "Create an API token (creating the team if missing). Prints the raw token alone on the last line."

    def add_arguments(self, parser):
        parser.add_argument("--team", required=True, help="Team slug (created if missing).")
        parser.add_argument("--app", help="Limit the token to this app (slug).")
        parser.add_argument("--role", default=Role.DEPLOYER, choices=Role.values)
        parser.add_argument("--name", default="", help="A name to recognise it by (default: cli-<date>).")
        parser.add_argument(
            "--stages", default="", help="Comma-separated stages it may change (default: all)."
        )
        parser.add_argument("--expires-days", type=int, help="Expire after this many days (default: never).")

    def handle(self, *args, **options):
        try:
            team, created = services.ensure_team(slug=options["team"])
        except services.InvalidTeamSlug as exc:
            raise CommandError(exc.detail) from exc
        if created:
            self.stdout.write(f"Team {team.slug} created.")
        app = None
        if options["app"]:
            app = App.objects.filter(team=team, slug=options["app"]).first()
            if app is None:
                raise CommandError(f"Team {team.slug} has no app '{options['app']}'.")
        stages = [s.strip() for s in options["stages"].split(",") if s.strip()]
        for stage in stages:
            try:
                stage_name_validator(stage)
            except Exception as exc:  # noqa: BLE001 - a ValidationError, reported as a usage error
                raise CommandError(f"'{stage}': {exc}") from exc
        expires_at = None
        if options["expires_days"] is not None:
            if options["expires_days"] < 1:
                raise CommandError("--expires-days must be at least 1.")
            expires_at = timezone.now() + timedelta(days=options["expires_days"])
        name = options["name"] or f"cli-{timezone.now():%Y%m%d-%H%M%S}"
        token, raw = services.create_api_token(
            team=team, name=name, role=options["role"], app=app, stages=stages, expires_at=expires_at
        )
        scope = f"app {app.slug}" if app else "the whole team"
        self.stdout.write(
            f"Token '{token.name}' ({token.prefix}…): {token.role} on {scope} of {team.slug}"
            + (f", stages {', '.join(token.stages)}" if token.stages else "")
            + (f", expires {token.expires_at:%Y-%m-%d}" if token.expires_at else "")
            + ". It is shown once:"
        )
        self.stdout.write(raw)
