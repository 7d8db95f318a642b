"""Indexes for long histories: an app's deployment log newest first, by status, and its release
list, each paged by id. On PostgreSQL they are built CONCURRENTLY: a table of a million
deployments keeps taking writes (deploys going on) while its index is built."""

from django.conf import settings
from django.db import migrations, models
from django.db.migrations.operations import AddIndex


class AddIndexWithoutLocking(AddIndex):
    """CREATE INDEX CONCURRENTLY on PostgreSQL; a plain CREATE INDEX elsewhere."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.add_index(model, self.index, concurrently=True)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        model = from_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.remove_index(model, self.index, concurrently=True)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("deployments", "0011_app_repo_url_validator"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        AddIndexWithoutLocking(
            model_name="deployment",
            index=models.Index(fields=["app", "-id"], name="deployment_app_newest"),
        ),
        AddIndexWithoutLocking(
            model_name="deployment",
            index=models.Index(fields=["app", "status", "-id"], name="deployment_app_status_newest"),
        ),
        AddIndexWithoutLocking(
            model_name="release",
            index=models.Index(fields=["app", "-id"], name="release_app_newest"),
        ),
    ]
