"""How long AWS takes, as the benchmarks' emulator plays it (bench/aws_emulator.py ``--model``).

A call to AWS from the control plane costs, in this model:

    round trip (home region -> the region the call is signed for)
    + the operation's own service time (what AWS spends answering it)

and some calls leave something that settles later, as AWS does: a new Lambda function is
``Pending`` then ``Active``, an updated one has ``LastUpdateStatus`` ``InProgress`` then
``Successful`` (the strict emulator's ``lambda_states`` rule, tests/support/strict_aws.py,
with the windows below), and an update or publish meanwhile is refused with
``ResourceConflictException``, so the engine's waits are exercised as on AWS.

The numbers, and where they come from (all approximations; none was measured by this project):

- **Round trips** (``RTT_FROM_US_EAST_1_MS``): from us-east-1, the default home region, to every
  region of the catalog (regions/catalog.py). Marked ``"ping"``: rounded medians of the public
  AWS inter-region latency measurements of cloudping.co (EC2-to-EC2 pings between regions, as
  published in 2024), to 5 ms; 10 ms within us-east-1 itself (an API call to a regional
  endpoint from the same region, keep-alive connection). Marked ``"distance"``: regions too new
  for a long public series (Taipei, Malaysia, New Zealand, Thailand, Mexico, Calgary), estimated
  as below. A call to a global service (IAM, Route 53) is signed for us-east-1 and costs that
  round trip.
- **Another home region** (``--home-region``): round trips are estimated from the great-circle
  distance between the regions' cities (``LOCATIONS``, public knowledge of where each region
  is): ``SAME_REGION_MS + km / KM_PER_MS``. ``KM_PER_MS`` = 80 fits the measured figures above
  within about 20 % for most pairs (light in fibre covers ~200 km per ms one way, i.e. ~100 km per
  ms of round trip, and real routes are longer than great circles); it underestimates routes that
  detour (us-east-1 -> Cape Town: 170 ms estimated, ~225 ms measured).
- **Service times** (``SERVICE_MS``): what an operation takes on AWS's side, beyond the round
  trip. AWS does not publish these; the figures are round numbers of the order seen in
  CloudTrail/X-Ray timings of boto3 calls made from inside the same region: reads 20-40 ms,
  small writes 50-100 ms, resource creation 150-300 ms (``CreateFunction`` ~300 ms,
  ``PublishVersion`` ~200 ms, ``UpdateAlias`` ~50 ms, Route 53 ``ChangeResourceRecordSets``
  ~100 ms). An operation not listed costs ``DEFAULT_READ_MS`` when its name starts with Get,
  List, Describe or Head, else ``DEFAULT_WRITE_MS``. ``--service-scale`` multiplies them all.
- **Settling** (``pending_s``, ``update_s``): AWS documents the states
  (https://docs.aws.amazon.com/lambda/latest/dg/functions-states.html), not their length; for a
  zip function outside a VPC they typically last 1-3 s. Defaults: ``Pending`` 2 s after
  ``CreateFunction``, ``InProgress`` 1.5 s after ``UpdateFunctionCode`` or
  ``UpdateFunctionConfiguration``. ``settle_jitter`` (a fraction, default 0) draws each window
  uniformly from ``s * (1 - j) .. s * (1 + j)``; with jitter, a deploy to N regions waits for the
  slowest of N draws, so the fan-out ratios then measure AWS's spread as well as the engine.

The emulator spends the service time *with* moto's own processing (a call that moto takes
5 ms to answer waits 295 ms more for a 300 ms operation), so the emulator's CPU is hidden inside
the modelled time as long as the machine has a core for it. Half the round trip is spent before
the call reaches moto, half after, so a settling window starts where AWS would start it.

``flat_ms`` (the ``--flat-ms`` variants of the benchmarks) replaces all of this with one fixed
latency per call and no service time, the older model, kept to measure CPU per call.

The per-account control-plane quotas of API Gateway and Route 53 (strict mode's
``apigw_limits``, ``route53_rate``) are off in the realistic model: they bound how fast one AWS
account can create APIs (one ``CreateRestApi`` every 3 s per region), not how fast the control
plane works, and 50 apps deployed at once in one account would spend minutes waiting for them.
``bench/aws_emulator.py --model ... strict`` keeps every strict rule on as well.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from functools import lru_cache

HOME_REGION = "us-east-1"
SAME_REGION_MS = 10.0
KM_PER_MS = 80.0

# Round trip in ms from us-east-1, and where the figure comes from (see the module docstring).
RTT_FROM_US_EAST_1_MS: dict[str, tuple[float, str]] = {
    "af-south-1": (225, "ping"),
    "ap-east-1": (195, "ping"),
    "ap-east-2": (185, "distance"),
    "ap-northeast-1": (145, "ping"),
    "ap-northeast-2": (175, "ping"),
    "ap-northeast-3": (150, "ping"),
    "ap-south-1": (185, "ping"),
    "ap-south-2": (195, "ping"),
    "ap-southeast-1": (215, "ping"),
    "ap-southeast-2": (200, "ping"),
    "ap-southeast-3": (225, "ping"),
    "ap-southeast-4": (205, "ping"),
    "ap-southeast-5": (215, "distance"),
    "ap-southeast-6": (190, "distance"),
    "ap-southeast-7": (195, "distance"),
    "ca-central-1": (15, "ping"),
    "ca-west-1": (50, "distance"),
    "eu-central-1": (90, "ping"),
    "eu-central-2": (95, "ping"),
    "eu-north-1": (110, "ping"),
    "eu-south-1": (100, "ping"),
    "eu-south-2": (85, "ping"),
    "eu-west-1": (70, "ping"),
    "eu-west-2": (75, "ping"),
    "eu-west-3": (80, "ping"),
    "il-central-1": (135, "ping"),
    "me-central-1": (165, "ping"),
    "me-south-1": (160, "ping"),
    "mx-central-1": (45, "distance"),
    "sa-east-1": (115, "ping"),
    "us-east-1": (SAME_REGION_MS, "ping"),
    "us-east-2": (15, "ping"),
    "us-west-1": (65, "ping"),
    "us-west-2": (65, "ping"),
}

# Where each region is (the city it is named after or nearest to): latitude, longitude.
LOCATIONS: dict[str, tuple[float, float]] = {
    "af-south-1": (-33.92, 18.42),  # Cape Town
    "ap-east-1": (22.32, 114.17),  # Hong Kong
    "ap-east-2": (25.03, 121.57),  # Taipei
    "ap-northeast-1": (35.68, 139.69),  # Tokyo
    "ap-northeast-2": (37.57, 126.98),  # Seoul
    "ap-northeast-3": (34.69, 135.50),  # Osaka
    "ap-south-1": (19.08, 72.88),  # Mumbai
    "ap-south-2": (17.39, 78.49),  # Hyderabad
    "ap-southeast-1": (1.35, 103.82),  # Singapore
    "ap-southeast-2": (-33.87, 151.21),  # Sydney
    "ap-southeast-3": (-6.21, 106.85),  # Jakarta
    "ap-southeast-4": (-37.81, 144.96),  # Melbourne
    "ap-southeast-5": (3.14, 101.69),  # Kuala Lumpur
    "ap-southeast-6": (-36.85, 174.76),  # Auckland
    "ap-southeast-7": (13.76, 100.50),  # Bangkok
    "ca-central-1": (45.50, -73.57),  # Montreal
    "ca-west-1": (51.05, -114.07),  # Calgary
    "eu-central-1": (50.11, 8.68),  # Frankfurt
    "eu-central-2": (47.38, 8.54),  # Zurich
    "eu-north-1": (59.33, 18.07),  # Stockholm
    "eu-south-1": (45.46, 9.19),  # Milan
    "eu-south-2": (41.65, -0.88),  # Aragon
    "eu-west-1": (53.35, -6.26),  # Dublin
    "eu-west-2": (51.51, -0.13),  # London
    "eu-west-3": (48.86, 2.35),  # Paris
    "il-central-1": (32.09, 34.78),  # Tel Aviv
    "me-central-1": (24.45, 54.38),  # Abu Dhabi
    "me-south-1": (26.07, 50.56),  # Bahrain
    "mx-central-1": (20.59, -100.39),  # Queretaro
    "sa-east-1": (-23.55, -46.63),  # Sao Paulo
    "us-east-1": (39.04, -77.49),  # Ashburn, N. Virginia
    "us-east-2": (39.96, -83.00),  # Columbus, Ohio
    "us-west-1": (37.35, -121.96),  # San Jose, N. California
    "us-west-2": (45.84, -119.70),  # Boardman, Oregon
}

# AWS's own time per operation, in ms ("service:Operation", botocore's names).
SERVICE_MS: dict[str, float] = {
    # Lambda
    "lambda:CreateFunction": 300,
    "lambda:UpdateFunctionCode": 250,
    "lambda:UpdateFunctionConfiguration": 200,
    "lambda:PublishVersion": 200,
    "lambda:GetFunction": 30,
    "lambda:GetFunctionConfiguration": 25,
    "lambda:ListVersionsByFunction": 40,
    "lambda:GetAlias": 20,
    "lambda:ListAliases": 30,
    "lambda:CreateAlias": 60,
    "lambda:UpdateAlias": 50,
    "lambda:GetPolicy": 20,
    "lambda:AddPermission": 60,
    "lambda:RemovePermission": 50,
    "lambda:DeleteFunction": 80,
    # API Gateway (REST APIs)
    "apigateway:CreateRestApi": 200,
    "apigateway:GetRestApis": 40,
    "apigateway:GetRestApi": 30,
    "apigateway:GetResources": 30,
    "apigateway:CreateResource": 80,
    "apigateway:PutMethod": 60,
    "apigateway:PutIntegration": 80,
    "apigateway:CreateDeployment": 250,
    "apigateway:CreateStage": 100,
    "apigateway:GetStage": 30,
    "apigateway:UpdateStage": 80,
    "apigateway:CreateDomainName": 300,
    "apigateway:CreateBasePathMapping": 100,
    # Route 53 (global: signed for us-east-1)
    "route53:ChangeResourceRecordSets": 100,
    "route53:ListResourceRecordSets": 40,
    "route53:CreateHealthCheck": 120,
    "route53:GetHealthCheck": 30,
    "route53:GetHealthCheckStatus": 40,
    "route53:ChangeTagsForResource": 60,
    # S3
    "s3:CreateBucket": 200,
    "s3:HeadBucket": 15,
    "s3:HeadObject": 15,
    "s3:PutObject": 50,
    "s3:GetObject": 20,
    # IAM (global), STS
    "iam:CreateRole": 150,
    "iam:GetRole": 40,
    "iam:AttachRolePolicy": 80,
    "sts:GetCallerIdentity": 15,
    "sts:AssumeRole": 50,
    # ACM
    "acm:RequestCertificate": 200,
    "acm:DescribeCertificate": 30,
}
DEFAULT_READ_MS = 30.0
DEFAULT_WRITE_MS = 80.0
_READ = re.compile(r"^(Get|List|Describe|Head)")


@dataclasses.dataclass
class Model:
    """One configuration of the model (what the emulator is started with)."""

    home: str = HOME_REGION
    flat_ms: float | None = None  # one fixed latency per call instead of the model
    service_scale: float = 1.0
    pending_s: float = 2.0
    update_s: float = 1.5
    settle_jitter: float = 0.0
    service_ms: dict[str, float] = dataclasses.field(default_factory=dict)  # overrides of SERVICE_MS

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Model:
        return cls(**json.loads(text))

    def describe(self) -> str:
        if self.flat_ms is not None:
            return f"flat {self.flat_ms:.0f} ms per AWS call, no service time, Lambda settling off"
        return (
            f"realistic: home {self.home}, round trip by region + service time per operation "
            f"(x{self.service_scale:g}), Lambda Pending {self.pending_s:g} s / InProgress "
            f"{self.update_s:g} s" + (f" (jitter +-{self.settle_jitter:.0%})" if self.settle_jitter else "")
        )

    def rtt_s(self, region: str) -> float:
        return rtt_ms(self.home, region) / 1000

    def service_s(self, operation: str) -> float:
        """``operation`` is "service:Operation"."""
        ms = self.service_ms.get(operation, SERVICE_MS.get(operation))
        if ms is None:
            name = operation.split(":", 1)[-1]
            ms = DEFAULT_READ_MS if _READ.match(name) else DEFAULT_WRITE_MS
        return ms * self.service_scale / 1000

    def latency_s(self, region: str, operation: str) -> tuple[float, float]:
        """(round trip, service time) of one call, in seconds."""
        if self.flat_ms is not None:
            return self.flat_ms / 1000, 0.0
        return self.rtt_s(region), self.service_s(operation)


def distance_km(a: str, b: str) -> float:
    """Great-circle distance between the cities of regions ``a`` and ``b``."""
    (lat1, lon1), (lat2, lon2) = (map(math.radians, LOCATIONS[r]) for r in (a, b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371 * math.asin(math.sqrt(h))


@lru_cache(maxsize=4096)
def rtt_ms(home: str, region: str) -> float:
    """The modelled round trip from ``home`` to ``region`` in ms: the table when one end is
    us-east-1, else the distance estimate. An unknown region (not in the catalog) costs as much
    as the farthest known one."""
    if home == region:
        return SAME_REGION_MS
    if HOME_REGION in (home, region):
        other = region if home == HOME_REGION else home
        if other in RTT_FROM_US_EAST_1_MS:
            return float(RTT_FROM_US_EAST_1_MS[other][0])
    if home in LOCATIONS and region in LOCATIONS:
        return SAME_REGION_MS + distance_km(home, region) / KM_PER_MS
    return max(v for v, _ in RTT_FROM_US_EAST_1_MS.values())


def distance_estimate_ms(a: str, b: str) -> float:
    return SAME_REGION_MS + distance_km(a, b) / KM_PER_MS


def farthest(regions, home: str = HOME_REGION) -> str:
    """The region of ``regions`` with the longest round trip from ``home``."""
    return max(regions, key=lambda r: (rtt_ms(home, r), r))


def regions_by_distance(regions, home: str = HOME_REGION) -> list[str]:
    """``regions``, farthest from ``home`` first (ties by name)."""
    return sorted(regions, key=lambda r: (-rtt_ms(home, r), r))


# --- Which operation a request is ---------------------------------------------------------------
# The signing name in a SigV4 credential scope, where it differs from botocore's service name.
_SERVICE_NAMES = {"servicequotas": "service-quotas", "execute-api": "apigateway"}


@dataclasses.dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern
    query: tuple[tuple[str, str], ...]  # (key, value or "") the URI or a required member puts there
    headers: tuple[str, ...]  # headers a required member puts there (lower case)
    specificity: int
    operation: str

    def matches(self, method: str, path: str, query: dict, headers: dict) -> bool:
        return (
            self.method == method
            and all(k in query and (not v or v in query[k]) for k, v in self.query)
            and all(h in headers for h in self.headers)
            and self.pattern.match(path) is not None
        )


@lru_cache(maxsize=64)
def _rest_routes(service: str) -> list[_Route]:
    """The routes of a REST service's operations, most specific first, from botocore's own
    service model (URI template, fixed query keys, required header and query members)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model(service)
    routes = []
    for name in model.operation_names:
        op = model.operation_model(name)
        path, _, fixed = op.http.get("requestUri", "/").partition("?")
        query = [tuple((part.split("=", 1) + [""])[:2]) for part in fixed.split("&") if part]
        headers = []
        shape = op.input_shape
        for member in shape.required_members if shape is not None else []:
            where = shape.members[member].serialization
            if where.get("location") == "header":
                headers.append(where.get("name", member).lower())
            elif where.get("location") == "querystring":
                query.append((where.get("name", member), ""))
        pattern, literal = "", 0
        for piece in re.split(r"(\{[^}]+\})", path):
            if piece.startswith("{"):
                pattern += "(.+)" if piece.endswith("+}") else "([^/]+)"
            else:
                pattern += re.escape(piece)
                literal += len(piece)
        pattern = pattern.rstrip("/") + "/?"
        specificity = literal + 10 * (len(query) + len(headers))
        routes.append(
            _Route(
                op.http.get("method", "GET"),
                re.compile(f"^{pattern}$"),
                tuple(query),
                tuple(headers),
                specificity,
                name,
            )  # fmt: skip
        )
    return sorted(routes, key=lambda r: -r.specificity)


@lru_cache(maxsize=64)
def _protocol(service: str) -> str:
    import botocore.session

    try:
        return botocore.session.get_session().get_service_model(service).metadata.get("protocol", "")
    except Exception:  # noqa: BLE001 - an unknown service: the call is named by its method
        return ""


def operation_of(signing_name: str, method: str, path: str, query: dict, headers: dict, body: bytes) -> str:
    """ "service:Operation" of an AWS request, as botocore names it ("service:METHOD" when the
    service or the route is unknown)."""
    service = _SERVICE_NAMES.get(signing_name, signing_name)
    target = headers.get("x-amz-target", "")
    if target:
        return f"{signing_name}:{target.rsplit('.', 1)[-1]}"
    protocol = _protocol(service)
    if protocol in ("query", "ec2"):
        from urllib.parse import parse_qs

        action = query.get("Action") or parse_qs(body.decode(errors="replace")).get("Action") or [""]
        return f"{signing_name}:{action[0]}"
    if protocol in ("rest-json", "rest-xml"):
        for route in _rest_routes(service):
            if route.matches(method, path, query, headers):
                return f"{signing_name}:{route.operation}"
    return f"{signing_name}:{method}"
