"""Factories: each makes one object (and what it cannot exist without)."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from controlplane.choices import Role
from controlplane.models import ApiToken, Membership, Team
from deployments.models import App, EnvVar, Stage
from regions.models import AppRegion, Region


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"team{n}")
    name = factory.LazyAttribute(lambda o: o.slug.title())


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    password = factory.django.Password("correct horse battery staple")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    team = factory.SubFactory(TeamFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.DEPLOYER


class ApiTokenFactory(factory.django.DjangoModelFactory):
    """Makes a token; the raw value is on ``token.raw`` (the database only has its hash)."""

    class Meta:
        model = ApiToken

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"token{n}")
    role = Role.DEPLOYER

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        raw = ApiToken.generate()
        obj = model_class(*args, **kwargs, token_hash=ApiToken.hash(raw), prefix=raw[:8])
        obj.save()
        obj.raw = raw
        return obj


class RegionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Region
        django_get_or_create = ("code",)

    code = "us-east-1"
    name = factory.LazyAttribute(lambda o: o.code)
    enabled = True


class AppFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = App

    team = factory.SubFactory(TeamFactory)
    slug = factory.Sequence(lambda n: f"app{n}")
    name = factory.LazyAttribute(lambda o: o.slug.title())
    runtime = "python3.12"
    handler = "app.handler"


class AppRegionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AppRegion

    app = factory.SubFactory(AppFactory)
    region = factory.SubFactory(RegionFactory)


class StageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Stage

    app = factory.SubFactory(AppFactory)
    name = "production"
    branch = "main"


class EnvVarFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = EnvVar

    app = factory.SubFactory(AppFactory)
    key = factory.Sequence(lambda n: f"KEY_{n}")
    value = "value"
