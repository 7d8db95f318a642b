"""Commit shas are stored lowercase (``commit_fields``), so ``?sha=`` is a prefix match on the
index; rows written before, with a sha given in capitals, are lowercased once here."""

from django.db import migrations
from django.db.models.functions import Lower


def lowercase(apps, schema_editor):
    for name in ("Deployment", "Release"):
        model = apps.get_model("deployments", name)
        model.objects.exclude(commit_sha=Lower("commit_sha")).update(commit_sha=Lower("commit_sha"))


class Migration(migrations.Migration):
    dependencies = [("deployments", "0012_history_indexes")]

    operations = [migrations.RunPython(lowercase, migrations.RunPython.noop)]
