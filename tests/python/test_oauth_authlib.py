"""An independent OAuth2 client library (Authlib) obtains tokens from
swarmgate with private_key_jwt (RS256, RFC 7523) and client_secret_basic,
and introspects them (RFC 7662), all through the RFC 8414 metadata."""

import base64
import functools
import time

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import ADMIN_PASSWORD


def _b64(n):
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class ShortLivedPrivateKeyJWT(PrivateKeyJWT):
    """Authlib signs assertions valid for an hour by default; swarmgate, as
    RFC 7523 practice and its issue demand, accepts at most five minutes."""

    def sign(self, auth, token_endpoint):
        self.claims = {"exp": int(time.time()) + 120}
        return super().sign(auth, token_endpoint)


@functools.lru_cache
def _admin(base):
    r = requests.post(f"{base}/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _register(base, body):
    r = requests.post(f"{base}/admin/clients", json=body, headers=_admin(base))
    assert r.status_code == 201, r.text
    return r.json()


def _metadata(base):
    meta = requests.get(f"{base}/.well-known/oauth-authorization-server").json()
    assert "private_key_jwt" in meta["token_endpoint_auth_methods_supported"]
    assert "client_credentials" in meta["grant_types_supported"]
    return meta


def test_private_key_jwt_rs256_token_and_introspection(swarmgate):
    meta = _metadata(swarmgate)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_numbers()
    jwk = {"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig", "n": _b64(public.n), "e": _b64(public.e)}
    client = _register(swarmgate, {
        "name": "authlib-node", "grant_types": ["client_credentials"],
        "scopes": ["metrics.report", "tasks.read"], "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [jwk]},
    })
    assert "client_secret" not in client
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()

    session = OAuth2Session(
        client["client_id"], pem,
        token_endpoint_auth_method="private_key_jwt", revocation_endpoint_auth_method="private_key_jwt",
    )
    session.register_client_auth_method(
        ShortLivedPrivateKeyJWT(meta["token_endpoint"], headers={"kid": "rsa-1"}, alg="RS256")
    )
    # Authlib's default (an hour ahead) is refused: at most five minutes.
    default = OAuth2Session(client["client_id"], pem, token_endpoint_auth_method="private_key_jwt")
    default.register_client_auth_method(PrivateKeyJWT(meta["token_endpoint"], headers={"kid": "rsa-1"}, alg="RS256"))
    r = default.post(meta["token_endpoint"], data={"grant_type": "client_credentials"}, withhold_token=True,
                     auth=default.client_auth(default.token_endpoint_auth_method))
    assert r.status_code == 401, r.text
    assert "5 minutes" in r.json()["error_description"]

    token = session.fetch_token(meta["token_endpoint"], grant_type="client_credentials", scope="tasks.read")
    assert token["token_type"] == "Bearer"
    assert token["scope"] == "tasks.read"
    assert token["expires_in"] > 0

    # The token works, narrowed to its scope.
    auth = {"Authorization": f"Bearer {token['access_token']}"}
    me = requests.get(f"{swarmgate}/auth/me", headers=auth).json()
    assert me["client_id"] == client["client_id"]
    allowed = requests.post(f"{swarmgate}/auth/verify-permission", json={"permission": "metrics.report"}, headers=auth).json()
    assert allowed["allowed"] is False

    # Introspection, authenticated with a fresh assertion.
    result = session.introspect_token(meta["introspection_endpoint"], token=token["access_token"]).json()
    assert result["active"] is True
    assert result["client_id"] == client["client_id"]
    assert result["scope"] == "tasks.read"

    # Revocation, then introspection says inactive.
    r = session.revoke_token(meta["revocation_endpoint"], token=token["access_token"])
    assert r.status_code == 200, r.text
    result = session.introspect_token(meta["introspection_endpoint"], token=token["access_token"]).json()
    assert result == {"active": False}


def test_client_secret_basic_token_and_introspection(swarmgate):
    meta = _metadata(swarmgate)
    client = _register(swarmgate, {
        "name": "authlib-service", "grant_types": ["client_credentials"],
        "scopes": ["tasks.*"], "token_endpoint_auth_method": "client_secret_basic",
    })
    session = OAuth2Session(
        client["client_id"], client["client_secret"], token_endpoint_auth_method="client_secret_basic"
    )
    token = session.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
    assert token["scope"] == "tasks.*"
    result = session.introspect_token(meta["introspection_endpoint"], token=token["access_token"]).json()
    assert result["active"] is True
    assert result["sub"] == f"client:{client['client_id']}"

    wrong = OAuth2Session(client["client_id"], "sgc_wrong", token_endpoint_auth_method="client_secret_basic")
    r = wrong.introspect_token(meta["introspection_endpoint"], token=token["access_token"])
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"
