import pytest

from deployments.env import EnvTooLarge, effective_env, env_key_problem, resolve_env
from tests.factories import AppFactory, EnvVarFactory, RegionFactory, StageFactory


@pytest.mark.parametrize("key", ["1ABC", "A-B", "", "A B", "É", "Q"])
def test_invalid_env_keys_are_refused(key):
    assert "not a valid env var name" in env_key_problem(key)


@pytest.mark.parametrize("key", ["AWS_REGION", "AWS_LAMBDA_FUNCTION_NAME", "_HANDLER", "AWS_LAMBDA_X"])
def test_reserved_env_keys_are_refused(key):
    assert "reserved" in env_key_problem(key)


@pytest.mark.parametrize("key", ["AWS_LAMBDA_EXEC_WRAPPER", "AWS_XRAY_CONTEXT_MISSING", "QA", "NODE_OPTIONS"])
def test_keys_lambda_lets_owners_set_are_accepted(key):
    assert env_key_problem(key) is None


def test_most_specific_env_var_wins(db):
    app = AppFactory()
    staging, prod = StageFactory(app=app, name="staging"), StageFactory(app=app, name="production")
    use1, euw1 = RegionFactory(code="us-east-1"), RegionFactory(code="eu-west-1")
    EnvVarFactory(app=app, key="LEVEL", value="app")
    EnvVarFactory(app=app, key="LEVEL", value="stage", stage=prod)
    EnvVarFactory(app=app, key="LEVEL", value="region", region=euw1)
    EnvVarFactory(app=app, key="LEVEL", value="both", stage=prod, region=euw1)
    EnvVarFactory(app=app, key="ONLY_APP", value="x")

    assert resolve_env(app=app, stage=staging, region=use1) == {"LEVEL": "app", "ONLY_APP": "x"}
    assert resolve_env(app=app, stage=prod, region=use1)["LEVEL"] == "stage"
    assert resolve_env(app=app, stage=staging, region=euw1)["LEVEL"] == "region"
    assert resolve_env(app=app, stage=prod, region=euw1)["LEVEL"] == "both"


def test_env_over_4kb_is_refused_naming_the_largest_keys():
    class Row:
        def __init__(self, key, value):
            self.key, self.value, self.stage_id, self.region_id = key, value, None, None

    rows = [Row("BIG_ONE", "x" * 3000), Row("BIG_TWO", "y" * 1500), Row("SMALL", "z")]
    with pytest.raises(EnvTooLarge) as err:
        effective_env(rows, stage_id=1, region_id=1)
    assert "BIG_ONE" in err.value.detail and "BIG_TWO" in err.value.detail
