"""A local OIDC issuer: a key pair of each kind, its discovery document and JWKS served over
HTTP on loopback, and ID tokens shaped like GitHub Actions' and GitLab CI's."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Issuer:
    """An OIDC issuer at ``self.url``. ``keys`` (kid → private key) are all published unless
    listed in ``hidden``; ``jwks_hits`` counts fetches of the key set."""

    def __init__(self) -> None:
        self.keys = {
            "rsa-1": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ec-1": ec.generate_private_key(ec.SECP256R1()),
        }
        self.hidden: set[str] = set()
        self.jwks_hits = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/keys"}
                elif self.path == "/keys":
                    issuer.jwks_hits += 1
                    body = issuer.jwks()
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()

    def add_key(self, kid: str) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict:
        keys = []
        for kid, key in self.keys.items():
            if kid in self.hidden:
                continue
            alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
            jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": alg})
        return {"keys": keys}

    def claims(self, *, audience: str, lifetime: int = 300, **overrides) -> dict:
        """GitHub Actions' claims for a push to main of acme/shop (``overrides`` replace any)."""
        now = int(time.time())
        return {
            "iss": self.url,
            "aud": audience,
            "sub": "repo:acme/shop:environment:production",
            "repository": "acme/shop",
            "repository_owner": "acme",
            "ref": "refs/heads/main",
            "ref_type": "branch",
            "sha": "a" * 40,
            "environment": "production",
            "workflow": "Deploy",
            "workflow_ref": "acme/shop/.github/workflows/deploy.yml@refs/heads/main",
            "actor": "ada",
            "run_id": "42",
            "iat": now,
            "nbf": now - 5,
            "exp": now + lifetime,
            **overrides,
        }

    def gitlab_claims(self, *, audience: str, **overrides) -> dict:
        now = int(time.time())
        return {
            "iss": self.url,
            "aud": audience,
            "sub": "project_path:acme/shop:ref_type:branch:ref:main",
            "project_path": "acme/shop",
            "ref": "main",
            "ref_type": "branch",
            "environment": "production",
            "ci_config_ref_uri": "gitlab.example.com/acme/shop//.gitlab-ci.yml@refs/heads/main",
            "user_login": "ada",
            "pipeline_id": "7",
            "sha": "b" * 40,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            **overrides,
        }

    def sign(self, claims: dict, *, kid: str = "rsa-1", alg: str | None = None) -> str:
        key = self.keys[kid]
        alg = alg or ("RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256")
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})

    def public_pem(self, kid: str = "rsa-1") -> bytes:
        return (
            self.keys[kid]
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )

    def forge_hs256_with_public_key(self, claims: dict, kid: str = "rsa-1") -> str:
        """The classic confusion attack: HMAC-signed with the public key's PEM as the secret
        (PyJWT refuses to make one, so it is put together by hand)."""
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
        payload = _b64(json.dumps(claims).encode())
        signature = hmac.new(self.public_pem(kid), f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64(signature)}"

    @staticmethod
    def unsigned(claims: dict) -> str:
        header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        return f"{header}.{_b64(json.dumps(claims).encode())}."
