"""Git-push webhooks from GitHub and GitLab: verified deliveries become deployments of the stages
whose branch was pushed. See ``service.receive`` for the flow and ``providers`` for each host."""
