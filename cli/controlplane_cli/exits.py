"""Exit codes: the contract CI scripts rely on. Documented in the README and ``--help``."""

from __future__ import annotations

SUCCEEDED = 0  # the deployment (or command) succeeded
FAILED = 1  # the deployment failed (every or some regions), was cancelled or superseded
USAGE = 2  # bad arguments or configuration (URL, token, a path that does not exist)
ROLLED_BACK = 3  # rolled back: by the failure policy, a health gate or a canary
TIMED_OUT = 4  # --timeout passed while waiting; the deployment goes on
REFUSED = 5  # the control plane refused: stage pinned, permission, validation, too large
UNREACHABLE = 6  # the control plane could not be reached, or answered with a server error
INTERRUPTED = 130  # Ctrl-C while following (the deployment goes on unless --cancel-on-interrupt)

TABLE = """exit codes:
  0  succeeded
  1  failed (also cancelled or superseded)
  2  usage or configuration error
  3  rolled back (failure policy, health gate or canary)
  4  timed out while waiting (the deployment goes on)
  5  refused (stage pinned, permission, validation, too large)
  6  the control plane could not be reached (or a server error)
  130 interrupted while following (the deployment goes on)"""


class CliError(Exception):
    """Ends the command with one line on stderr and ``exit_code``."""

    def __init__(self, exit_code: int, message: str):
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


def for_deployment(deployment: dict) -> int:
    """The exit code a finished (or still running) deployment stands for."""
    status = deployment.get("status", "")
    regions = deployment.get("regions") or []
    region_statuses = {r.get("status") for r in regions}
    if status in ("queued", "running", "succeeded"):
        return SUCCEEDED
    if status == "rolled_back":
        return ROLLED_BACK
    # A canary withdrawn in some regions while the others shipped: rolled back, nothing failed.
    if status == "partially_failed" and "rolled_back" in region_statuses and "failed" not in region_statuses:
        return ROLLED_BACK
    return FAILED
