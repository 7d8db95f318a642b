"""``manage.py local_regions_demo``: deploy the demo app through the REST API of the running dev
stack and print where it answers and what to try (``dev.py up --demo`` runs it once the stack is up)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from controlplane import services
from controlplane.choices import Role
from controlplane.models import Team
from regions.aws import serving
from regions.local.demo import DEMO_DOMAIN, DEMO_EMAIL, DemoFailed, run_demo


class Command(BaseCommand):
    help = "Deploy the demo app to three local regions through the API and print what to try."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--team", default="demo")
        parser.add_argument("--site", default=settings.SITE_URL, help="the running web server")

    def handle(self, *args, team: str, site: str, **options) -> None:
        logging.getLogger("httpx").setLevel(logging.WARNING)
        owner = Team.objects.filter(slug=team).first()
        if owner is None:
            raise CommandError(f"no team '{team}' (python3 scripts/dev.py setup makes the demo team)")
        zone_id = serving.ensure_hosted_zone(DEMO_DOMAIN.split(".", 1)[1])
        # A token for this run only: revoked when the demo is deployed, never shown.
        token, raw = services.create_api_token(team=owner, name="local regions demo", role=Role.ADMIN)
        try:
            result = run_demo(site=site.rstrip("/"), token=raw, zone_id=zone_id, say=self.stdout.write)
        except DemoFailed as exc:
            raise CommandError(f"the demo stopped: {exc}") from None
        finally:
            services.revoke_api_token(token=token)
        deployment = result.deployment
        failed = [r for r in deployment["regions"] if r["status"] != "succeeded"]
        lines = ["", f"Demo deployment #{deployment['id']}: {deployment['status']}"]
        lines += [f"  {r['region']:<15} {r['status']}: {r['error']}" for r in failed]
        lines += [f"  {code:<15} {url}/" for code, url in sorted(result.regions.items())]
        g = result.global_url
        lines += [
            f"  {'global':<15} {g}/   (latency-routed to the nearest healthy region)",
            "",
            "Try it:",
            f"  curl -i -H 'X-Client-Region: eu-central-1' {g}/hi     # served by eu-west-1 (bonjour)",
            f"  curl -i -H 'X-Client-Region: ap-northeast-1' {g}/hi   # served by ap-southeast-2",
            "  python3 scripts/dev.py fault eu-west-1 down --for 180s   # take Ireland down:",
            "      it refuses connections at once. The control plane's probes open an incident after",
            f"      2 failed rounds (~20 s): the worker prints the alert email to {DEMO_EMAIL}.",
            "      Route 53's checkers (a request every 30 s, 3 failures: ~90 s; faster with",
            "      LOCAL_REGIONS_CHECK_INTERVAL=5) then send the first curl to us-east-1.",
            "  python3 scripts/dev.py fault clear                       # bring it back: a recovery email,",
            "      and eu-central-1's traffic returns to eu-west-1",
            "",
        ]
        self.stdout.write("\n".join(lines))
