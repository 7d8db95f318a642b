"""The UI's forms: they turn fields into the values the services take. The services decide what
is valid (the same rules as the API); their refusals are shown on these forms."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from ..choices import LAMBDA_RUNTIMES, FailurePolicy

SCOPE_ALL = ""


class AppForm(forms.Form):
    team = forms.ChoiceField()
    slug = forms.CharField(max_length=40, help_text="Lowercase letters, digits and dashes.")
    name = forms.CharField(max_length=200, required=False)
    repo_url = forms.CharField(max_length=500, required=False, label="Repository URL")
    runtime = forms.ChoiceField(choices=[(r, r) for r in LAMBDA_RUNTIMES], initial="python3.12")
    handler = forms.CharField(max_length=128, initial="app.handler")
    memory_mb = forms.IntegerField(initial=256, label="Memory (MB)")
    timeout_s = forms.IntegerField(initial=10, label="Timeout (s)")
    health_path = forms.CharField(max_length=200, initial="/health")
    build_command = forms.CharField(max_length=1000, required=False)
    regions = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple)

    def __init__(self, *args, teams=(), regions=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].choices = list(teams)
        self.fields["regions"].choices = list(regions)

    def service_data(self) -> dict:
        data = dict(self.cleaned_data)
        data.pop("team")
        return data


def _int_or_none(value: str | None, name: str) -> int | None:
    value = (value or "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValidationError(f"'{name}' must be a whole number.") from None


class StageForm(forms.Form):
    """A stage's fields; the rollout policy is spread over plain inputs and put back together."""

    name = forms.CharField(max_length=64, required=False)
    branch = forms.CharField(max_length=255, required=False, help_text="Pushes to it deploy the stage.")
    domain = forms.CharField(max_length=253, required=False)
    hosted_zone_id = forms.CharField(max_length=64, required=False, label="Route 53 zone id")
    waves = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One wave per line, regions separated by commas; '*' stands for the regions not named.",
    )
    bake_s = forms.CharField(required=False, label="Bake between waves (s)")
    on_failure = forms.ChoiceField(
        choices=[("", "default (leave)")] + [(v, v) for v in FailurePolicy.values], required=False
    )
    canary_percent = forms.CharField(required=False, label="Canary share (%)")
    canary_bake_s = forms.CharField(required=False, label="Canary bake (s)")

    def __init__(self, *args, creating: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["name"].required = creating

    @classmethod
    def initial_for(cls, stage) -> dict:
        rollout = stage.rollout or {}
        canary = rollout.get("canary") or {}
        return {
            "branch": stage.branch,
            "domain": stage.domain,
            "hosted_zone_id": stage.hosted_zone_id,
            "waves": "\n".join(", ".join(w) for w in rollout.get("waves", [])),
            "bake_s": rollout.get("bake_s", ""),
            "on_failure": rollout.get("on_failure", ""),
            "canary_percent": canary.get("percent", ""),
            "canary_bake_s": canary.get("bake_s", ""),
        }

    def service_data(self) -> dict:
        """The stage fields as the services take them (raises ValidationError on a non-number)."""
        d = self.cleaned_data
        rollout: dict = {}
        waves = [[c.strip() for c in line.split(",") if c.strip()] for line in d["waves"].splitlines()]
        if any(waves):
            rollout["waves"] = [w for w in waves if w]
        bake = _int_or_none(d["bake_s"], "bake_s")
        if bake is not None:
            rollout["bake_s"] = bake
        if d["on_failure"]:
            rollout["on_failure"] = d["on_failure"]
        percent = _int_or_none(d["canary_percent"], "canary percent")
        canary_bake = _int_or_none(d["canary_bake_s"], "canary bake")
        if percent is not None or canary_bake is not None:
            rollout["canary"] = {"percent": percent}
            if canary_bake is not None:
                rollout["canary"]["bake_s"] = canary_bake
        return {
            "branch": d["branch"].strip(),
            "domain": d["domain"].strip(),
            "hosted_zone_id": d["hosted_zone_id"].strip(),
            "rollout": rollout,
        }


class DeployForm(forms.Form):
    stage = forms.ChoiceField()
    file = forms.FileField(
        required=False, label="Zip to upload", widget=forms.ClearableFileInput(attrs={"accept": ".zip"})
    )
    release = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
    commit_message = forms.CharField(max_length=10000, required=False, label="Note (commit message)")
    force = forms.BooleanField(required=False, label="Deploy even if the stage is pinned")

    def __init__(self, *args, stages=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["stage"].choices = list(stages)

    def clean(self):
        data = super().clean()
        if bool(data.get("file")) == bool(data.get("release")):
            raise ValidationError("Choose a zip to upload (or redeploy a release from its row).")
        return data


class PromoteForm(forms.Form):
    from_stage = forms.ChoiceField(label="From")
    to_stage = forms.ChoiceField(label="To")
    force = forms.BooleanField(
        required=False, label="Even if the source's regions disagree, or the target is pinned"
    )

    def __init__(self, *args, stages=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["from_stage"].choices = list(stages)
        self.fields["to_stage"].choices = list(stages)
        if len(stages) > 1:
            self.fields["to_stage"].initial = stages[-1][0]


class EnvVarForm(forms.Form):
    key = forms.CharField(max_length=255)
    value = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 1, "autocomplete": "off", "spellcheck": "false"}),
        help_text="For a secret being edited, leave empty to keep the stored value.",
    )
    secret = forms.BooleanField(required=False, help_text="Encrypted; never shown again, even to admins.")
    stage = forms.ChoiceField(required=False)
    region = forms.ChoiceField(required=False)

    def __init__(self, *args, stages=(), regions=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["stage"].choices = [(SCOPE_ALL, "every stage")] + [(s, s) for s in stages]
        self.fields["region"].choices = [(SCOPE_ALL, "every region")] + [(r, r) for r in regions]
