"""Prepare an installation: every commercial AWS region, and optionally a team with its first admin.

Safe to run on every start (docker-compose does): it only creates what is missing.
"""

from __future__ import annotations

import os

from django.core.management.base import BaseCommand, CommandError

from controlplane import services
from controlplane.choices import Role
from regions.services import seed_regions

PASSWORD_ENV = "CONTROLPLANE_ADMIN_PASSWORD"  # noqa: S105 - the variable's name, not a password


class Command(BaseCommand):
    help = "Seed the region catalog; with --team and --admin-user, create a team and its first admin."

    def add_arguments(self, parser):
        parser.add_argument("--team", help="Slug of a team to create (if missing).")
        parser.add_argument("--team-name", default="", help="Display name of that team.")
        parser.add_argument("--admin-user", help="Username of the team's first admin (created if missing).")
        parser.add_argument("--admin-email", default="", help="Their email address.")
        parser.add_argument(
            "--admin-password",
            help=f"Their password (default: ${PASSWORD_ENV}; a new user with neither gets a generated one, "
            "printed once).",
        )

    def handle(self, *args, **options):
        created, present = seed_regions()
        self.stdout.write(f"Regions: {created} added, {present} already present.")

        team_slug, username = options["team"], options["admin_user"]
        if username and not team_slug:
            raise CommandError("--admin-user needs --team.")
        if not team_slug:
            return
        try:
            team, team_created = services.ensure_team(slug=team_slug, name=options["team_name"])
        except services.InvalidTeamSlug as exc:
            raise CommandError(exc.detail) from exc
        self.stdout.write(f"Team {team.slug}: {'created' if team_created else 'already present'}.")
        if not username:
            return

        password = options["admin_password"] or os.environ.get(PASSWORD_ENV) or None
        user, user_created, generated = services.ensure_user(
            username=username, email=options["admin_email"], password=password
        )
        services.set_membership(team=team, user=user, role=Role.ADMIN)
        self.stdout.write(
            f"User {user.get_username()}: {'created' if user_created else 'already present'}, "
            f"admin of {team.slug}."
        )
        if generated:
            self.stdout.write(f"Generated password for {user.get_username()} (shown once): {generated}")
