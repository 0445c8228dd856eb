"""An independent JWT library (PyJWT) verifies swarmgate's access tokens
against the JWKS it serves, and refuses them when a claim does not match."""

import jwt
import pytest
import requests

from conftest import ADMIN_PASSWORD


def _login(base):
    r = requests.post(f"{base}/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 200, r.text
    return r.json()


def test_access_token_verifies_with_pyjwt_against_the_served_jwks(swarmgate):
    token = _login(swarmgate)["access_token"]
    config = requests.get(f"{swarmgate}/.well-known/openid-configuration").json()
    assert config["issuer"] == swarmgate
    client = jwt.PyJWKClient(config["jwks_uri"])
    signing_key = client.get_signing_key_from_jwt(token)
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "EdDSA"
    claims = jwt.decode(
        token,
        signing_key.key,
        algorithms=["EdDSA"],
        audience="swarmgate",
        issuer=config["issuer"],
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
    )
    assert claims["username"] == "admin"
    assert claims["role"] == "admin"
    assert claims["sid"]


def test_pyjwt_refuses_a_token_for_another_audience(swarmgate):
    token = _login(swarmgate)["access_token"]
    key = jwt.PyJWKClient(f"{swarmgate}/.well-known/jwks.json").get_signing_key_from_jwt(token)
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, key.key, algorithms=["EdDSA"], audience="someone-else")


def test_a_token_pyjwt_signs_with_its_own_key_is_refused_by_swarmgate(swarmgate):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    real = _login(swarmgate)["access_token"]
    claims = jwt.decode(real, options={"verify_signature": False})
    kid = jwt.get_unverified_header(real)["kid"]
    forged = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid, "typ": "at+jwt"})
    r = requests.get(f"{swarmgate}/auth/me", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_token"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
