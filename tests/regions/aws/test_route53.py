from __future__ import annotations

import pytest

from regions.aws import route53
from regions.aws.session import AwsError, client, reset_clients

from .conftest import canned_response, plain

API_ZONE = "ZLY8HYME6SFDD"  # API Gateway's regional hosted zone in eu-west-1
ENDPOINT = "abc123.execute-api.eu-west-1.amazonaws.com"


def r53():
    return plain("route53", "us-east-1")


@pytest.fixture
def zone(fake_aws) -> str:
    return r53().create_hosted_zone(Name="example.com", CallerReference="zone-1")["HostedZone"]["Id"]


def _check(**overrides) -> str:
    kwargs = dict(
        fqdn=ENDPOINT,
        path="/production/health",
        region="eu-west-1",
        caller_reference="shop-production-eu-west-1",
        search_string="ok",
    )
    kwargs.update(overrides)
    return route53.ensure_health_check(**kwargs)


def _all_checks() -> list[dict]:
    return r53().list_health_checks()["HealthChecks"]


def test_health_check_probes_the_endpoint_over_https(fake_aws):
    check_id = _check()
    config = r53().get_health_check(HealthCheckId=check_id)["HealthCheck"]["HealthCheckConfig"]
    assert config["Type"] == "HTTPS_STR_MATCH"
    assert (config["FullyQualifiedDomainName"], config["ResourcePath"], config["Port"]) == (
        ENDPOINT,
        "/production/health",
        443,
    )
    assert config["SearchString"] == "ok"


def test_health_check_without_search_string_checks_status_only(fake_aws):
    check_id = _check(caller_reference="plain", search_string="")
    config = r53().get_health_check(HealthCheckId=check_id)["HealthCheck"]["HealthCheckConfig"]
    assert config["Type"] == "HTTPS"
    assert "SearchString" not in config


def test_same_caller_reference_gives_the_same_check(fake_aws):
    first = _check()
    reset_clients()  # forget the per-process answer: the id the deploy recorded finds it
    assert _check(known_id=first) == first
    assert [c["Id"] for c in _all_checks()] == [first]


def test_a_recorded_check_costs_one_route53_request(fake_aws):
    first = _check()
    sent = []
    client("route53", "us-east-1").meta.events.register("before-send.route53", lambda **kw: sent.append(1))
    assert _check(known_id=first) == first
    assert len(sent) == 1


def test_latency_records_of_every_region_go_in_one_change_batch(zone):
    regions = ["eu-west-1", "us-east-1", "ap-southeast-2"]
    specs = [
        dict(region=code, set_identifier=code, target=f"d-{code}.execute-api.{code}.amazonaws.com",
             target_zone_id=API_ZONE, health_check_id=_check(caller_reference=code, region=code))
        for code in regions
    ]  # fmt: skip
    sent = []
    client("route53", "us-east-1").meta.events.register(
        "before-send.route53.ChangeResourceRecordSets", lambda **kw: sent.append(1)
    )
    assert route53.upsert_latency_records(zone_id=zone, name="shop.example.com", records=specs) == 3
    assert len(sent) == 1
    records = route53.list_latency_records(zone, "shop.example.com")
    assert sorted(r["set_identifier"] for r in records) == sorted(regions)
    assert route53.upsert_latency_records(zone_id=zone, name="shop.example.com", records=specs) == 0
    assert len(sent) == 1  # nothing differs: nothing sent


def test_changed_path_updates_the_existing_check(fake_aws):
    first = _check()
    assert _check(path="/production/healthz", search_string="fine") == first
    config = r53().get_health_check(HealthCheckId=first)["HealthCheck"]["HealthCheckConfig"]
    assert (config["ResourcePath"], config["SearchString"]) == ("/production/healthz", "fine")
    assert len(_all_checks()) == 1


def test_changing_a_checks_type_is_refused(fake_aws):
    _check()
    with pytest.raises(AwsError) as caught:
        _check(search_string="")
    assert (caught.value.code, caught.value.retryable) == ("HealthCheckTypeChanged", False)


def test_deleting_a_check_twice_is_fine(fake_aws):
    first = _check()
    route53.delete_health_check(first)
    route53.delete_health_check(first)
    assert _all_checks() == []


def test_status_is_healthy_when_checkers_succeed(fake_aws):
    # moto reports one successful observation for every check.
    assert route53.health_check_status(_check()) == "Healthy"


def _observations(statuses: list[str]):
    items = "".join(
        "<HealthCheckObservation><Region>us-east-1</Region><IPAddress>1.2.3.4</IPAddress>"
        f"<StatusReport><Status>{s}</Status><CheckedTime>2026-01-01T00:00:00Z</CheckedTime></StatusReport>"
        "</HealthCheckObservation>"
        for s in statuses
    )
    body = (
        '<GetHealthCheckStatusResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">'
        f"<HealthCheckObservations>{items}</HealthCheckObservations></GetHealthCheckStatusResponse>"
    ).encode()
    client("route53", "us-east-1").meta.events.register_first(
        "before-send.route53.GetHealthCheckStatus",
        lambda request, **kwargs: canned_response(request.url, 200, body, {"content-type": "text/xml"}),
    )


def test_status_is_unhealthy_when_most_checkers_fail(fake_aws):
    _observations(["Failure: HTTP Status Code 502"] * 7 + ["Success: HTTP Status Code 200"])
    assert route53.health_check_status(_check()) == "Unhealthy"


def test_status_is_unknown_before_any_observation(fake_aws):
    _observations([])
    assert route53.health_check_status(_check()) == "Unknown"


def test_status_is_unknown_where_the_api_is_not_implemented(fake_aws):
    body = (
        b"<ErrorResponse><Error><Code>NotImplemented</Code>"
        b"<Message>not implemented</Message></Error></ErrorResponse>"
    )
    client("route53", "us-east-1").meta.events.register_first(
        "before-send.route53.GetHealthCheckStatus",
        lambda request, **kwargs: canned_response(request.url, 501, body, {"content-type": "text/xml"}),
    )
    assert route53.health_check_status("any") == "Unknown"


def test_status_of_a_deleted_check_is_an_error(fake_aws):
    with pytest.raises(AwsError) as caught:
        route53.health_check_status("no-such-check")
    assert caught.value.code == "NoSuchHealthCheck"


def _records(zone: str) -> list[dict]:
    return [
        r
        for r in r53().list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
        if r["Name"] == "api.example.com."
    ]


def test_latency_alias_record_points_at_the_regional_domain(zone):
    check_id = _check()
    changed = route53.upsert_latency_record(
        zone_id=zone,
        name="api.example.com",
        region="eu-west-1",
        set_identifier="eu-west-1",
        target="d-abc.execute-api.eu-west-1.amazonaws.com",
        target_zone_id=API_ZONE,
        health_check_id=check_id,
    )
    assert changed is True
    [record] = _records(zone)
    assert record["Type"] == "A"
    assert (record["SetIdentifier"], record["Region"], record["HealthCheckId"]) == (
        "eu-west-1",
        "eu-west-1",
        check_id,
    )
    assert record["AliasTarget"]["HostedZoneId"] == API_ZONE
    assert record["AliasTarget"]["DNSName"].rstrip(".") == "d-abc.execute-api.eu-west-1.amazonaws.com"


def test_latency_record_already_in_place_is_not_sent_again(zone):
    check_id = _check()
    kwargs = dict(
        zone_id=zone,
        name="api.example.com",
        region="eu-west-1",
        set_identifier="eu-west-1",
        target="d-abc.execute-api.eu-west-1.amazonaws.com",
        target_zone_id=API_ZONE,
        health_check_id=check_id,
    )
    route53.upsert_latency_record(**kwargs)
    assert route53.upsert_latency_record(**kwargs) is False
    assert len(_records(zone)) == 1


def test_without_a_target_zone_the_record_is_a_short_lived_cname(zone):
    check_id = _check()
    route53.upsert_latency_record(
        zone_id=zone,
        name="api.example.com",
        region="us-east-1",
        set_identifier="us-east-1",
        target=ENDPOINT,
        health_check_id=check_id,
    )
    [record] = _records(zone)
    assert (record["Type"], record["TTL"], record["ResourceRecords"]) == ("CNAME", 60, [{"Value": ENDPOINT}])
    assert (record["Region"], record["HealthCheckId"]) == ("us-east-1", check_id)


def test_switching_a_region_from_cname_to_alias_leaves_one_record(zone):
    check_id = _check()
    common = dict(zone_id=zone, name="api.example.com", region="eu-west-1", set_identifier="eu-west-1")
    route53.upsert_latency_record(**common, target=ENDPOINT, health_check_id=check_id)
    route53.upsert_latency_record(
        **common,
        target="d-abc.execute-api.eu-west-1.amazonaws.com",
        target_zone_id=API_ZONE,
        health_check_id=check_id,
    )
    assert [r["Type"] for r in _records(zone)] == ["A"]


def test_latency_records_are_listed_per_region_and_deleted_one_by_one(zone):
    r53().change_resource_record_sets(
        HostedZoneId=zone,
        ChangeBatch={
            "Changes": [
                {
                    "Action": "UPSERT",
                    "ResourceRecordSet": {
                        "Name": "www.example.com",
                        "Type": "CNAME",
                        "TTL": 300,
                        "ResourceRecords": [{"Value": "elsewhere.example.net"}],
                    },
                }
            ]
        },
    )
    checks = {}
    for region in ("eu-west-1", "us-east-1"):
        checks[region] = _check(caller_reference=f"shop-{region}", region=region)
        route53.upsert_latency_record(
            zone_id=zone,
            name="api.example.com",
            region=region,
            set_identifier=region,
            target=f"d-{region}.execute-api.{region}.amazonaws.com",
            target_zone_id=API_ZONE,
            health_check_id=checks[region],
        )
    listed = route53.list_latency_records(zone, "api.example.com")
    assert sorted(
        (r["set_identifier"], r["region"], r["health_check_id"], r["type"], r["target"]) for r in listed
    ) == [
        (
            "eu-west-1",
            "eu-west-1",
            checks["eu-west-1"],
            "A",
            "d-eu-west-1.execute-api.eu-west-1.amazonaws.com",
        ),
        (
            "us-east-1",
            "us-east-1",
            checks["us-east-1"],
            "A",
            "d-us-east-1.execute-api.us-east-1.amazonaws.com",
        ),
    ]

    assert (
        route53.delete_latency_record(zone_id=zone, name="api.example.com", set_identifier="us-east-1")
        is True
    )
    assert (
        route53.delete_latency_record(zone_id=zone, name="api.example.com", set_identifier="us-east-1")
        is False
    )
    assert [r["set_identifier"] for r in route53.list_latency_records(zone, "api.example.com")] == [
        "eu-west-1"
    ]
    assert route53.list_latency_records(zone, "www.example.com") == []


def test_hosted_zone_is_found_for_a_domain(zone):
    deeper = r53().create_hosted_zone(Name="eu.example.com", CallerReference="zone-2")["HostedZone"]["Id"]
    assert route53.find_hosted_zone("api.example.com") == zone.rsplit("/", 1)[-1]
    assert route53.find_hosted_zone("api.eu.example.com") == deeper.rsplit("/", 1)[-1]
    assert route53.find_hosted_zone("api.example.org") is None


def test_plain_record_is_upserted(zone):
    route53.upsert_record(
        zone_id=zone, name="_x.api.example.com", type="CNAME", value="_y.acm-validations.aws."
    )
    records = r53().list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    assert any(
        r["Name"] == "_x.api.example.com." and r["ResourceRecords"] == [{"Value": "_y.acm-validations.aws."}]
        for r in records
    )
