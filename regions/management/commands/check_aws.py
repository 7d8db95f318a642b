"""``manage.py check_aws [--region CODE ...]``: before the first real deploy, check every enabled
region (credentials, role to assume, artifact bucket, Lambda execution role, hosted zones, ACM
quota, Lambda concurrency): a line per check, ok or what to fix. Exits 1 when anything needs
fixing."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from regions.models import Region
from regions.readiness import check_region


class Command(BaseCommand):
    help = (
        "Check that AWS is ready for deploys in each enabled region (a line per check: ok, or what to fix)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--region", action="append", default=[], help="Only this region (repeatable).")

    def handle(self, *args, **options):
        regions = Region.objects.filter(enabled=True).order_by("code")
        if options["region"]:
            regions = Region.objects.filter(code__in=options["region"]).order_by("code")
            missing = set(options["region"]) - {r.code for r in regions}
            if missing:
                raise CommandError(f"No such region on this installation: {', '.join(sorted(missing))}")
        failed = 0
        for region in regions:
            self.stdout.write(region.code)
            for check in check_region(region):
                if check.ok:
                    self.stdout.write(f"  ok   {check.name}: {check.detail}")
                else:
                    failed += 1
                    self.stdout.write(f"  FIX  {check.name}: {check.detail}\n       → {check.fix}")
        if failed:
            raise CommandError(f"{failed} check(s) need fixing.", returncode=1)
        self.stdout.write("Every check passed.")
