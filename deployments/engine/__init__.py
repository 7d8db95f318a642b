"""The deploy engine: how a deployment runs, once the services have recorded it.

- ``states``: the only writer of region and deployment status (and ``finished_at``,
  ``heartbeat_at``), with the allowed transitions as a table.
- ``dispatch``: enqueue a deployment, its regions, a rollback (through ``controlplane.queue``).
- ``claim``: claim a region or a whole rollback with a conditional update; the heartbeat thread.
- ``context``: what one region's run knows (``RegionRun``) and the exceptions steps raise.
- ``steps/``: one module per step (``applies``, ``run``), their order in ``steps/__init__.py``.
- ``run``: the step loop: cancel check, timing, AWS errors (retry or fail), the failure policy.
- ``build``, ``releases``: build a release from git; freeze a release.
- ``driver``: start a deployment, run a region, after a region, advance the waves.
- ``rollback``: the all-regions rollback fast path. ``reaper``: recovery of lost or stuck work.

Calls go down only: the services and the tasks call the engine; the engine calls
``regions/aws/``, ``regions.probes`` and ``deployments.alerts``, never a service or a task.
"""
