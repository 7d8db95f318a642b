"""The verbs of deployments, called by the front doors (API, web UI, webhooks): each checks the
domain's rules, writes, and hands work to the engine."""
