"""Move every encrypted value to the newest key, after prepending a new one to ENCRYPTION_KEYS.

Once it reports no failures, the old keys can be dropped from ENCRYPTION_KEYS.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from controlplane.services import reencrypt_secrets


class Command(BaseCommand):
    help = "Re-encrypt every encrypted field of every model with the newest ENCRYPTION_KEYS key."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=500, help="Rows per transaction.")

    def handle(self, *args, **options):
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        result = reencrypt_secrets(batch_size=options["batch_size"])
        for label, count in result.counts.items():
            self.stdout.write(f"{label}: {count} re-encrypted")
        total = sum(result.counts.values())
        self.stdout.write(f"Total: {total} values re-encrypted with the newest key.")
        if result.failures:
            for label, pks in result.failures.items():
                self.stderr.write(f"{label}: no configured key decrypts rows {', '.join(pks)}")
            raise CommandError("Some values could not be decrypted; keep the old keys until they are fixed.")
