"""The team web UI: server-rendered pages over the selectors and services the REST API uses."""

from .actions import (
    app_create,
    app_delete,
    deploy,
    deployment_cancel,
    deployment_retry,
    env_create,
    env_delete,
    env_edit,
    promote_stage,
    stage_delete,
    stage_form,
    stage_rollback,
    stage_unpin,
)
from .common import favicon
from .health import app_health_page
from .pages import app_detail, app_list, deployment_detail, deployment_list, env_page

__all__ = [
    "app_create",
    "app_delete",
    "stage_delete",
    "app_detail",
    "app_health_page",
    "app_list",
    "deploy",
    "deployment_cancel",
    "deployment_detail",
    "deployment_list",
    "deployment_retry",
    "env_create",
    "env_delete",
    "env_edit",
    "env_page",
    "favicon",
    "promote_stage",
    "stage_form",
    "stage_rollback",
    "stage_unpin",
]
