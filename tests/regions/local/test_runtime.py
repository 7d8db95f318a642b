"""The local regions process serving functions made directly in moto: the proxy event and the
answer's mapping, Lambda's environment and context, errors as API Gateway reports them, warm
workers, Node handlers, canary weights, bad input and faults."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections import Counter
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from tests.support.localregions import LocalRegionsProcess, publish_function, zip_of
from tests.support.processes import wait_for

REGION = "eu-west-1"

ECHO = """
import os, json
def handler(event, context):
    print("echo", event["path"])
    return {
        "statusCode": 201,
        "headers": {"content-type": "application/json", "x-one": "1"},
        "multiValueHeaders": {"set-cookie": ["a=1", "b=2"]},
        "body": json.dumps({
            "event": event,
            "context": {
                "function_name": context.function_name,
                "function_version": context.function_version,
                "invoked_function_arn": context.invoked_function_arn,
                "aws_request_id": context.aws_request_id,
                "memory_limit_in_mb": context.memory_limit_in_mb,
                "remaining": context.get_remaining_time_in_millis(),
            },
            "env": dict(os.environ),
        }),
    }
"""


@pytest.fixture(scope="module")
def regions(moto_server):
    process = LocalRegionsProcess(
        aws_url=moto_server.url,
        # Something of the control plane's own environment that no function may see.
        env={"DATABASE_URL": "postgres://cp:hunter2@db/cp", "LOCAL_REGIONS_IDLE_S": "2"},
    ).start()
    yield process
    process.stop()


def call(regions, api: str, path: str = "/", *, stage: str = "live", region: str = REGION, **kwargs):
    return httpx.request(
        kwargs.pop("method", "GET"), f"{regions.region_url(region)}/{api}/{stage}{path}", timeout=30, **kwargs
    )


def test_python_handler_gets_the_proxy_event_its_context_and_only_lambdas_environment(moto_server, regions):
    api = publish_function(moto_server, REGION, "echo", zip_of({"app.py": ECHO}), env={"GREETING": "hi"})
    response = call(
        regions, api, "/items/7?tag=a&tag=b&q=1", method="POST", content=b'{"n": 1}',
        headers={"content-type": "application/json", "x-trace": "t1"},
    )  # fmt: skip
    assert response.status_code == 201, regions.log()[-3000:]
    assert response.headers["x-one"] == "1"
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert response.headers["x-served-by-region"] == REGION
    body = response.json()
    event, context, env = body["event"], body["context"], body["env"]

    assert event["resource"] == "/{proxy+}" and event["path"] == "/items/7"
    assert event["httpMethod"] == "POST" and event["body"] == '{"n": 1}' and event["isBase64Encoded"] is False
    assert event["headers"]["x-trace"] == "t1" and event["multiValueHeaders"]["x-trace"] == ["t1"]
    assert event["queryStringParameters"] == {"tag": "b", "q": "1"}
    assert event["multiValueQueryStringParameters"] == {"tag": ["a", "b"], "q": ["1"]}
    assert event["pathParameters"] == {"proxy": "items/7"}
    assert event["stageVariables"] == {"alias": "live"}
    rc = event["requestContext"]
    assert rc["stage"] == "live" and rc["identity"]["sourceIp"] == "127.0.0.1" and rc["apiId"] == api
    assert rc["requestId"] == response.headers["x-amzn-requestid"] == context["aws_request_id"]

    assert context["function_name"] == "echo" and context["function_version"] == "1"
    assert context["invoked_function_arn"].endswith(":function:echo:live")
    assert context["memory_limit_in_mb"] == "128" and 0 < context["remaining"] <= 3000

    assert env["GREETING"] == "hi" and env["AWS_REGION"] == REGION and env["_HANDLER"] == "app.handler"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "echo" and env["AWS_LAMBDA_FUNCTION_VERSION"] == "1"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "128" and Path(env["LAMBDA_TASK_ROOT"]).is_dir()
    assert env["AWS_ENDPOINT_URL"] == moto_server.url  # the function reaches the local AWS
    leaked = [
        k for k in env if k.startswith(("DJANGO", "CONTROLPLANE", "DATABASE", "REDIS", "SECRET", "CELERY"))
    ]
    assert leaked == []
    assert "hunter2" not in response.text

    root = call(regions, api, "/")
    assert root.json()["event"]["resource"] == "/" and root.json()["event"]["pathParameters"] is None

    # The handler's output is in the stack's output, prefixed, and kept per version.
    regions.wait_log(f"[{REGION} echo:1] echo /items/7")
    kept = Path(settings.DATA_DIR) / "local-regions" / "logs" / REGION / "echo" / "1.log"
    assert "echo /items/7" in kept.read_text()


def test_a_warm_worker_serves_the_next_requests_and_idle_ones_are_reaped(moto_server, regions):
    code = "import os\ndef handler(e, c):\n    return {'body': str(os.getpid())}\n"
    api = publish_function(moto_server, REGION, "warm", zip_of({"app.py": code}))
    pids = {call(regions, api, "/").text for _ in range(5)}
    assert len(pids) == 1  # one warm process, not one per request
    (worker,) = [w for w in regions.status()["workers"] if w["function"] == "warm"]
    assert pids == {"2"}  # in a PID namespace of its own: the sandbox's init is 1
    assert 0 < worker["rss_kb"] < 60_000, worker  # the interpreter, the sandbox's init and its forwarder
    wait_for(
        lambda: not [w for w in regions.status()["workers"] if w["function"] == "warm"],
        timeout=15, interval=0.5, message="the idle worker to be reaped",
    )  # fmt: skip
    assert call(regions, api, "/").status_code == 200  # and a new one starts on demand


ERRORS = {
    "boom": ("app.handler", "def handler(e, c):\n    raise ValueError('kaput')\n"),
    "slow": ("app.handler", "import time\ndef handler(e, c):\n    time.sleep(10)\n"),
    "crash": ("app.handler", "import os\ndef handler(e, c):\n    os._exit(3)\n"),
    "shape": ("app.handler", "def handler(e, c):\n    return 'not a proxy answer'\n"),
    "nomod": ("missing.handler", "def handler(e, c):\n    return {}\n"),
    "nofunc": ("app.nothere", "def handler(e, c):\n    return {}\n"),
}


def test_errors_are_answered_as_api_gateway_does_and_reported_as_lambda_does(moto_server, regions):
    apis = {
        name: publish_function(moto_server, REGION, f"err-{name}", zip_of({"app.py": code}), handler=handler,
                               timeout=1 if name == "slow" else 3)
        for name, (handler, code) in ERRORS.items()
    }  # fmt: skip
    internal = {"message": "Internal server error"}
    for name in ("boom", "crash", "shape", "nomod", "nofunc"):
        response = call(regions, apis[name], "/x")
        assert (response.status_code, response.json()) == (502, internal), name
    slow = call(regions, apis["slow"], "/x")
    assert slow.status_code == 504 and slow.elapsed.total_seconds() < 5

    log = regions.wait_log("Runtime.HandlerNotFound", "Malformed Lambda proxy response", "Task timed out")
    assert "ValueError: kaput" in log and "Traceback" not in log.split("ValueError: kaput")[0][-2:]
    assert (
        f"[{REGION} err-nomod:1] [ERROR] Runtime.ImportModuleError: Unable to import module 'missing'" in log
    )
    assert "Handler 'nothere' missing on module 'app'" in log
    assert f"[{REGION} err-slow:1] Task timed out after 1.00 seconds" in log
    assert f"[{REGION} err-crash:1] Runtime.ExitError" in log
    assert "Malformed Lambda proxy response" in log
    # The timed-out and crashed workers were replaced: their functions still answer (and fail) as before.
    assert call(regions, apis["crash"], "/x").status_code == 502
    assert call(regions, apis["boom"], "/x").status_code == 502


def test_unknown_api_stage_or_runtime_and_oversized_bodies(moto_server, regions):
    api = publish_function(
        moto_server, REGION, "plain", zip_of({"app.py": "def handler(e, c):\n    return {}\n"})
    )
    assert call(regions, "nosuchapi", "/").json() == {"message": "Forbidden"}
    assert call(regions, api, "/", stage="nostage").status_code == 403
    assert call(regions, api, "/", region="us-west-2").status_code == 403  # it lives in eu-west-1 only
    big = call(regions, api, "/upload", method="POST", content=b"x" * (10 * 1024 * 1024 + 1))
    assert big.status_code == 413
    assert call(regions, api, "/").status_code == 200

    java = publish_function(moto_server, REGION, "javaish", zip_of({"app.py": ""}), runtime="java21")
    assert call(regions, java, "/").status_code == 502
    regions.wait_log("Runtime.InvalidRuntime")
    assert call(regions, api, "/").status_code == 200  # the process still serves


def test_a_zip_with_escaping_paths_is_never_unpacked_outside_the_cache(moto_server, regions, tmp_path):
    victim = tmp_path / "escaped.py"
    link = zipfile.ZipInfo("link.py")
    link.external_attr = 0o120777 << 16
    archives = {
        "dotdot": zip_of({"app.py": "", f"../../../../../../../../..{victim}": "x = 1"}),
        "absolute": zip_of({"app.py": "", str(victim): "x = 1"}),
        "symlink": zip_of({"app.py": ""}, raw=[(link, str(victim).encode())]),
    }
    for name, data in archives.items():
        api = publish_function(moto_server, REGION, f"slip-{name}", data)
        assert call(regions, api, "/").status_code == 502, name
    assert not victim.exists()
    log = regions.log()
    assert "points outside the function's folder" in log and "is a symbolic link" in log


NODE_ESM = """
export const handler = async (event, context) => {
  console.log("esm", event.path);
  return { statusCode: 200, body: JSON.stringify({ kind: "esm", fn: context.functionName,
    left: context.getRemainingTimeInMillis(), region: process.env.AWS_REGION, who: process.env.WHO }) };
};
"""
NODE_CJS = """
exports.handler = function (event, context, callback) {
  const body = "cjs " + event.httpMethod + " " + context.awsRequestId;
  setTimeout(() => callback(null, { statusCode: 202, body }), 5);
};
"""
NODE_THROW = "exports.handler = async () => { throw new TypeError('node kaput'); };\n"


def test_node_handlers_es_module_async_and_commonjs_callback(moto_server, regions):
    esm = publish_function(moto_server, REGION, "node-esm", zip_of({"index.mjs": NODE_ESM}),
                           handler="index.handler", runtime="nodejs20.x", env={"WHO": "node"})  # fmt: skip
    cjs = publish_function(moto_server, REGION, "node-cjs", zip_of({"lib/cb.js": NODE_CJS}),
                           handler="lib/cb.handler", runtime="nodejs20.x")  # fmt: skip
    bad = publish_function(moto_server, REGION, "node-bad", zip_of({"index.js": NODE_THROW}),
                           handler="index.handler", runtime="nodejs20.x")  # fmt: skip
    nomod = publish_function(moto_server, REGION, "node-nomod", zip_of({"index.js": NODE_THROW}),
                             handler="other.handler", runtime="nodejs20.x")  # fmt: skip
    answer = call(regions, esm, "/hello").json()
    assert answer["kind"] == "esm" and answer["fn"] == "node-esm" and answer["who"] == "node"
    assert answer["region"] == REGION and 0 < answer["left"] <= 3000
    response = call(regions, cjs, "/", method="PUT")
    assert response.status_code == 202 and response.text == f"cjs PUT {response.headers['x-amzn-requestid']}"
    assert call(regions, bad, "/").status_code == 502
    assert call(regions, nomod, "/").status_code == 502
    log = regions.wait_log("node kaput", "Cannot find module")
    assert f"[{REGION} node-esm:1] esm /hello" in log
    assert f"[{REGION} node-bad:1] ERROR\tTypeError: node kaput" in log
    assert f"[{REGION} node-nomod:1] ERROR\tRuntime.ImportModuleError" in log


def test_binary_answers_and_bodies_are_base64_both_ways(moto_server, regions):
    code = (
        "import base64\ndef handler(e, c):\n"
        "    return {'statusCode': 200, 'isBase64Encoded': True, 'headers': {'content-type': 'image/png'},\n"
        "            'body': base64.b64encode(base64.b64decode(e['body'])[::-1]).decode()}\n"
    )
    api = publish_function(moto_server, REGION, "binary", zip_of({"app.py": code}))
    response = call(
        regions, api, "/", method="POST", content=b"\x00\x01\xff", headers={"content-type": "image/png"}
    )
    assert response.content == b"\xff\x01\x00"


def test_a_weighted_alias_splits_traffic_like_a_canary(moto_server, regions):
    from tests.support.deploys import boto

    api = publish_function(
        moto_server, REGION, "canary", zip_of({"app.py": "def handler(e, c):\n    return {'body': 'v1'}\n"})
    )
    lam, s3 = boto("lambda", REGION, moto_server), boto("s3", REGION, moto_server)
    v2 = zip_of({"app.py": "def handler(e, c):\n    return {'body': 'v2'}\n"})
    key = f"artifacts/canary/{hashlib.sha256(v2).hexdigest()}.zip"  # content-addressed, as the engine's
    s3.put_object(Bucket=f"code-{REGION}", Key=key, Body=v2)
    lam.update_function_code(FunctionName="canary", S3Bucket=f"code-{REGION}", S3Key=key)
    # An update is InProgress for a while; a publish during it is refused (as on AWS).
    wait_for(
        lambda: (
            lam.get_function_configuration(FunctionName="canary").get("LastUpdateStatus", "Successful")
            == "Successful"
        ),
        timeout=30,
        message="the code update to finish",
    )
    version = lam.publish_version(FunctionName="canary")["Version"]
    lam.update_alias(FunctionName="canary", Name="live", FunctionVersion="1",
                     RoutingConfig={"AdditionalVersionWeights": {version: 0.2}})  # fmt: skip
    url = f"{regions.region_url(REGION)}/{api}/live/"
    with httpx.Client(timeout=10) as client:
        wait_for(lambda: client.get(url).text == "v2", timeout=10, message="the canary to be seen")
        counts = Counter(client.get(url).text for _ in range(2000))
    assert set(counts) == {"v1", "v2"}
    assert 0.16 <= counts["v2"] / 2000 <= 0.24, counts


def test_faults_down_error_slow_flaky_hang_and_their_expiry(moto_server, regions):
    hello = "def handler(e, c):\n    return {'body': 'ok'}\n"
    api = publish_function(moto_server, "us-west-2", "faulty", zip_of({"app.py": hello}))
    other = publish_function(moto_server, "us-west-2", "bystander", zip_of({"app.py": hello}))
    assert call(regions, api, "/", region="us-west-2").text == "ok"
    bad = httpx.post(regions.url + "/_faults", json={"region": "mars-1", "mode": "down"}, timeout=5)
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_fault"
    assert httpx.post(regions.url + "/_faults", content=b"{", timeout=5).status_code == 400

    regions.fault(region="us-west-2", mode="error")
    assert call(regions, api, "/", region="us-west-2").status_code == 503
    regions.fault(region="us-west-2", mode="slow", ms=400)
    assert call(regions, api, "/", region="us-west-2").elapsed.total_seconds() >= 0.4
    regions.fault(region="us-west-2", mode="flaky", percent=50)
    with httpx.Client(timeout=10) as client:
        url = f"{regions.region_url('us-west-2')}/{api}/live/"
        codes = Counter(client.get(url).status_code for _ in range(200))
    assert 60 <= codes[503] <= 140, codes
    regions.fault(region="us-west-2", mode="hang")
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{regions.region_url('us-west-2')}/{api}/live/", timeout=1)
    regions.clear("us-west-2")

    # Narrowed to one app: the other function of the region is untouched.
    regions.fault(region="us-west-2", mode="error", app="faulty")
    assert call(regions, api, "/", region="us-west-2").status_code == 503
    assert call(regions, other, "/", region="us-west-2").status_code == 200
    regions.clear()

    regions.fault(region="us-west-2", mode="down", for_s=1.5)
    with pytest.raises(httpx.ConnectError):
        call(regions, api, "/", region="us-west-2")
    assert regions.status()["down"] == ["us-west-2"]
    wait_for(lambda: not regions.status()["down"], timeout=10, message="the fault to expire")
    assert call(regions, api, "/", region="us-west-2").text == "ok"


SNOOP = """
import json, os, socket, urllib.error, urllib.request
def handler(event, context):
    procs = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            procs.append(open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode())
        except OSError:
            pass
    reach = {}
    for port in json.loads(os.environ["PORTS"]):
        sock = socket.socket()
        sock.settimeout(1)
        try:
            sock.connect(("127.0.0.1", port))
            reach[port] = True
        except OSError:
            reach[port] = False
        finally:
            sock.close()
    try:
        urllib.request.urlopen(os.environ["AWS_ENDPOINT_URL"] + "/moto-api/", timeout=5)
        aws = "reached"
    except urllib.error.HTTPError:
        aws = "reached"
    except OSError as exc:
        aws = repr(exc)
    files = {path: os.path.exists(path) for path in json.loads(os.environ["PATHS"])}
    return {"body": json.dumps({"procs": procs, "reach": reach, "aws": aws, "files": files})}
"""


def test_lambda_code_sees_nothing_of_the_control_plane_and_reaches_only_the_aws_emulator(
    moto_server, regions
):
    """The function hunts for the control plane: its processes, files, web server (a listener
    standing in for it, and the local regions' own port), database and broker. It finds none
    and reaches only the AWS emulator."""
    import socket

    from tests.support.processes import ROOT

    listener = socket.create_server(("127.0.0.1", 0))  # the web server's stand-in
    ports = [listener.getsockname()[1], regions.base, regions.ports["us-east-1"]]
    for url in (os.environ.get("DATABASE_URL", ""), os.environ.get("REDIS_URL", "")):
        if url:
            ports.append(httpx.URL(url).port or (5432 if url.startswith("postgres") else 6379))
    paths = [str(ROOT / "controlplane" / "settings.py"), str(settings.DATA_DIR), "/etc/shadow", "/root"]
    api = publish_function(
        moto_server, REGION, "snoop", zip_of({"app.py": SNOOP}),
        env={"PORTS": json.dumps(ports), "PATHS": json.dumps(paths)}, timeout=20,
    )  # fmt: skip
    try:
        response = call(regions, api, "/")
    finally:
        listener.close()
    assert response.status_code == 200, regions.log()[-2000:]
    found = response.json()
    assert found["aws"] == "reached"
    assert found["reach"] == dict.fromkeys(map(str, ports), False)
    assert found["files"] == dict.fromkeys(paths, False)
    commands = " | ".join(found["procs"])
    assert "python" in commands  # it sees itself...
    for hint in ("manage.py", "celery", "pytest", "local_regions", "moto"):
        assert hint not in commands  # ...and nothing of the control plane
