"""``manage.py local_regions``: serve every deployed function of the configured AWS (the moto
server in the dev stack) as Lambda, API Gateway and Route 53 would, on this machine."""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from controlplane import sandbox
from regions.local.endpoints import region_ports
from regions.local.server import Config, run


class Command(BaseCommand):
    help = "Serve the deployed Lambda functions of every region locally (the dev stack's local regions)."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--port",
            type=int,
            default=settings.LOCAL_REGIONS_PORT,
            help="base port: global endpoints and the admin API; the regions on the next ports",
        )
        parser.add_argument("--host", default=settings.LOCAL_REGIONS_HOST)

    def handle(self, *args, port: int, host: str, **options) -> None:
        logging.basicConfig(level=logging.INFO)
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency; asyncio's loop still works
            uvloop = None
        sandboxed = settings.LOCAL_REGIONS_SANDBOX
        code_root = None
        if sandboxed:
            lacking = sandbox.missing()
            if lacking:
                raise CommandError(
                    "Lambda code runs in a sandbox, which this machine cannot run: "
                    + "; ".join(lacking)
                    + ". Install bubblewrap, or set LOCAL_REGIONS_SANDBOX=false to run it unsandboxed."
                )
            root = settings.SANDBOX_DIR or None
            code_root = sandbox.workdir("local-regions-", root)
        else:
            self.stderr.write(
                "WARNING: LOCAL_REGIONS_SANDBOX is off: deployed Lambda code runs as plain processes "
                "that can read this machine's files and reach the control plane's web server, "
                "database and broker. Turn it off only where bubblewrap is absent."
            )
        config = Config(
            host=host,
            base_port=port,
            ports=region_ports(port),
            data_dir=Path(settings.DATA_DIR) / "local-regions",
            aws_endpoint=settings.AWS_ENDPOINT_URL or "",
            max_workers=settings.LOCAL_REGIONS_MAX_WORKERS,
            max_per_version=settings.LOCAL_REGIONS_MAX_PER_VERSION,
            idle_s=settings.LOCAL_REGIONS_IDLE_S,
            client_region=settings.LOCAL_REGIONS_CLIENT_REGION,
            check_interval_s=settings.LOCAL_REGIONS_CHECK_INTERVAL,
            sandboxed=sandboxed,
            code_root=code_root,
        )

        def ready(regions) -> None:
            first, last = min(config.ports.values()), max(config.ports.values())
            self.stdout.write(
                f"local regions on http://{host}:{port} (global endpoints, /_status, /_faults); "
                f"regions on ports {first}-{last}, e.g. us-east-1 http://{host}:{config.ports['us-east-1']}; "
                + ("Lambda code runs sandboxed" if sandboxed else "Lambda code runs UNSANDBOXED"),
            )
            self.stdout.flush()

        async def main() -> None:
            task = asyncio.current_task()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, task.cancel)
            try:
                await run(config, ready=ready)
            except asyncio.CancelledError:
                pass

        try:
            if uvloop is not None:
                uvloop.run(main())
            else:
                asyncio.run(main())
        finally:
            if code_root is not None:
                shutil.rmtree(code_root, ignore_errors=True)
