"""The CLI logs in by itself in GitHub Actions (the runner's ID token endpoint, faked on
loopback) and in GitLab CI (an ``id_tokens`` variable), with no stored secret."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from deployments.models import OidcTrustPolicy
from deployments.services.oidc import forget_keys
from tests.factories import AppFactory, StageFactory
from tests.support.oidc import Issuer

from .conftest import run_cli

pytestmark = pytest.mark.django_db(transaction=True)

RUNNER_SECRET = "runner-request-token"


class Runner:
    """GitHub Actions' ID token endpoint: ``GET ...&audience=X`` with the request token."""

    def __init__(self, issuer: Issuer):
        self.requests: list[dict] = []
        runner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                query = parse_qs(urlsplit(self.path).query)
                runner.requests.append({"query": query, "auth": self.headers.get("Authorization")})
                if self.headers.get("Authorization") != f"Bearer {RUNNER_SECRET}":
                    self.send_error(401)
                    return
                token = issuer.sign(issuer.claims(audience=query["audience"][0]))
                data = json.dumps({"count": 1, "value": token}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self):
        self._server.shutdown()


@pytest.fixture(scope="module")
def issuer():
    server = Issuer()
    yield server
    server.stop()


@pytest.fixture
def runner(issuer):
    server = Runner(issuer)
    yield server
    server.stop()


@pytest.fixture
def shop(team, issuer, live_server, settings):
    settings.OIDC_AUDIENCE = live_server.url
    forget_keys()
    app = AppFactory(team=team, slug="shop")
    StageFactory(app=app, name="production")
    OidcTrustPolicy.objects.create(app=app, issuer=issuer.url, repository="acme/shop", ref="main")
    return app


def test_in_github_actions_the_cli_logs_in_with_the_runners_id_token(shop, runner, live_server, cli_env_for):
    env = cli_env_for(
        live_server.url,
        ACTIONS_ID_TOKEN_REQUEST_URL=f"{runner.url}/idtoken?api-version=2.0",
        ACTIONS_ID_TOKEN_REQUEST_TOKEN=RUNNER_SECRET,
    )
    done = run_cli("status", "--app", "shop", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:2] == ["shop (python3.12)", "  production"]
    [request] = runner.requests
    assert request["query"] == {"api-version": ["2.0"], "audience": [live_server.url]}


def test_in_gitlab_ci_the_cli_exchanges_the_id_tokens_variable(shop, issuer, live_server, cli_env_for):
    token = issuer.sign(issuer.gitlab_claims(audience=live_server.url), kid="ec-1")
    done = run_cli("status", "--app", "shop", env=cli_env_for(live_server.url, CONTROLPLANE_OIDC_TOKEN=token))
    assert done.returncode == 0, done.stderr


def test_a_repository_no_policy_trusts_exits_5(shop, issuer, live_server, cli_env_for):
    token = issuer.sign(issuer.claims(audience=live_server.url, repository="mallory/shop"))
    done = run_cli("status", "--app", "shop", env=cli_env_for(live_server.url, CONTROLPLANE_OIDC_TOKEN=token))
    assert done.returncode == 5
    assert "(oidc_no_policy)" in done.stderr and len(done.stderr.strip().splitlines()) == 1
