"""Apps, stages, env vars, artifacts, releases, deployments and their log.

- ``models``, ``choices``, ``selectors`` (shared reads), ``env``, ``artifacts``, ``builds``;
  ``rollout`` (a stage's rollout policy, validated once and read as a typed object);
  ``events`` (the deployment log); ``alerts`` (what deployment alerts say).
- ``services/``: the verbs the front doors call: ``apps`` (apps, stages, env vars),
  ``deployments`` (create, promote, config-only, supersede, cancel), ``rollback`` (target,
  plan, act), ``releases`` (live and intended release, diffs).
- ``engine/``: how a deployment runs (states, dispatch, claim, steps, the step loop, driver,
  rollback fast path, reaper); see its docstring.
- front doors: ``api/`` (REST), ``views.py`` + ``templates/`` (web UI), ``webhooks/`` (git push).

Calls go one way: front doors → services → engine → ``regions/aws/``.
"""
