"""The steps of a region's deploy, one module each with ``applies(run)`` (False: nothing to do
in this region, known without asking anyone; the step is skipped with no cancel check) and
``run(run)`` (does it, reading AWS state first, and returns the log line, "" for none). The
order they run in is declared here; :mod:`..run` drives them."""

from __future__ import annotations

from . import alias, api, artifact, dns, function, gate, prune, shift, teardown, verify, version

STEPS = {
    "gate": gate,
    "artifact": artifact,
    "function": function,
    "version": version,
    "api": api,
    "dns": dns,
    "alias": alias,
    "verify": verify,
    "shift": shift,
    "prune": prune,
    "teardown": teardown,
}
DEPLOY_STEPS = ("gate", "artifact", "function", "version", "api", "dns", "alias", "verify", "shift", "prune")
# The regional API and its DNS need nothing the function steps make (the integration invokes the
# alias by name), so they run alongside artifact, function and version (after the health gate of
# a later wave); the alias moves only once both are done.
SIDE_STEPS = ("api", "dns")
ROLLBACK_STEPS = ("alias", "verify")
TEARDOWN_STEPS = ("teardown",)
