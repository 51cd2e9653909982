"""Drives Tessera's OAuth HTTP endpoints with off-the-shelf clients (Authlib's
requests-based OAuth2Session) and verifies issued JWTs with PyJWT's PyJWKClient
through the published JWKS URL. Nothing here is Tessera code.

Usage: oauth_interop.py <params.json>   (written by tests/interop.rs)
Exit status 0 only if every check ran and passed.
"""

import json
import os
import sys

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

checks = []


def check(name, cond, detail=""):
    checks.append((name, bool(cond)))
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else f"  ({detail})"), flush=True)


def verify_jwt(jwks_client, token, issuer, audience):
    key = jwks_client.get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        key.key,
        algorithms=["EdDSA", "ES256"],
        issuer=issuer,
        audience=audience,
        options={"require": ["exp", "iat", "nbf", "iss", "sub", "aud", "jti"]},
    )


def main():
    p = json.load(open(sys.argv[1]))
    base, issuer = p["http_base"], p["issuer"]

    meta = requests.get(f"{base}/.well-known/oauth-authorization-server", timeout=10).json()
    check("metadata issuer", meta["issuer"] == issuer, meta.get("issuer"))
    # RFC 8414 wants an https issuer; the test server is plain HTTP on loopback, so
    # Authlib is told to accept that (and only that) for this validation.
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"
    try:
        AuthorizationServerMetadata(meta).validate()
        check("RFC 8414 metadata passes Authlib's validator", True)
    except ValueError as e:
        check("RFC 8414 metadata passes Authlib's validator", False, e)
    finally:
        del os.environ["AUTHLIB_INSECURE_TRANSPORT"]
    check("metadata advertises the code flow with its front end",
          meta.get("authorization_endpoint") == p["authorization_endpoint"]
          and "authorization_code" in meta["grant_types_supported"]
          and meta["response_types_supported"] == ["code"]
          and "none" in meta["token_endpoint_auth_methods_supported"], meta)
    jwks_client = jwt.PyJWKClient(meta["jwks_uri"])

    # Introspection / revocation with a confidential client (HTTP Basic).
    rs = OAuth2Session(p["rs_client_id"], p["rs_client_secret"], token_endpoint_auth_method="client_secret_basic")
    at = p["grpc_access_token"]
    claims = verify_jwt(jwks_client, at, issuer, p["grpc_audience"])
    check("PyJWT verifies a gRPC-issued token via the JWKS URL", claims["sub"] == p["grpc_subject"], claims)
    r = rs.introspect_token(meta["introspection_endpoint"], token=at)
    check("introspect active", r.status_code == 200 and r.json().get("active") is True, r.text)
    check("introspect no-store", r.headers.get("Cache-Control") == "no-store", r.headers)
    r = rs.revoke_token(meta["revocation_endpoint"], token=at)
    check("revoke 200", r.status_code == 200, r.text)
    r = rs.introspect_token(meta["introspection_endpoint"], token=at)
    check("introspect after revoke: exactly {active:false}", r.json() == {"active": False}, r.text)

    # client_credentials
    cc = OAuth2Session(p["cc_client_id"], p["cc_client_secret"], token_endpoint_auth_method="client_secret_basic")
    tok = cc.fetch_token(meta["token_endpoint"], grant_type="client_credentials", scope="read:things")
    check("client_credentials token_type", tok.get("token_type", "").lower() == "bearer", tok)
    c = verify_jwt(jwks_client, tok["access_token"], issuer, p["cc_audience"])
    check("client_credentials JWT verifies; scope granted", c["scope"] == "read:things", c)
    check("client_credentials sub/client_id", c["sub"] == c["client_id"] == p["cc_client_id"], c)

    # client_secret_post and an error in RFC 6749 shape
    cc_post = OAuth2Session(p["cc_client_id"], p["cc_client_secret"], token_endpoint_auth_method="client_secret_post")
    tok2 = cc_post.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
    check("client_secret_post works", "access_token" in tok2, tok2)
    r = requests.post(meta["token_endpoint"], data={"grant_type": "password", "username": "u", "password": "p"},
                      auth=(p["cc_client_id"], p["cc_client_secret"]), timeout=10)
    check("password grant refused", r.status_code == 400 and r.json().get("error") == "unsupported_grant_type", r.text)
    r = requests.post(meta["token_endpoint"], data={"grant_type": "client_credentials"},
                      auth=(p["cc_client_id"], "tsk_wrong"), timeout=10)
    check("bad client secret -> invalid_client 401", r.status_code == 401 and r.json().get("error") == "invalid_client", r.text)

    # authorization_code + PKCE (S256), then refresh rotation and reuse detection.
    # The login front end (the Rust side of this test) minted the code over gRPC with
    # the challenge of this verifier; Authlib must agree on the S256 transform.
    verifier, code = p["app_code_verifier"], p["app_code"]
    check("Authlib S256 challenge matches", create_s256_code_challenge(verifier) == p["app_code_challenge"])
    app = OAuth2Session(p["app_client_id"], redirect_uri=p["app_redirect_uri"], token_endpoint_auth_method="none",
                        code_challenge_method="S256")
    tok = app.fetch_token(meta["token_endpoint"], grant_type="authorization_code", code=code,
                          code_verifier=verifier, redirect_uri=p["app_redirect_uri"])
    c = verify_jwt(jwks_client, tok["access_token"], issuer, p["app_audience"])
    check("authorization_code + PKCE token verifies", c["sub"] == p["app_subject"], c)
    check("refresh token issued", tok.get("refresh_token", "").startswith("tsr_"), tok)
    # RFC 8693, on behalf of: the client_credentials service trades carol's token, issued
    # to it, for a narrower one for the downstream API it may call ...
    tx = cc.fetch_token(meta["token_endpoint"], grant_type="urn:ietf:params:oauth:grant-type:token-exchange",
                        subject_token=p["exchange_subject_token"],
                        subject_token_type="urn:ietf:params:oauth:token-type:access_token",
                        audience="downstream-api", scope="profile")
    check("token exchange issued_token_type",
          tx.get("issued_token_type") == "urn:ietf:params:oauth:token-type:access_token", tx)
    c = verify_jwt(jwks_client, tx["access_token"], issuer, "downstream-api")
    check("token exchange keeps sub, records act", c["sub"] == p["exchange_subject"] and
          c.get("act", {}).get("client_id") == p["cc_client_id"], c)
    # ... but may not re-target bob's token, which was issued to the app, not to it.
    r = requests.post(meta["token_endpoint"], data={
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": tok["access_token"],
        "subject_token_type": "urn:ietf:params:oauth:token-type:access_token", "audience": "downstream-api"},
        auth=(p["cc_client_id"], p["cc_client_secret"]), timeout=10)
    check("token exchange of a token issued to another client -> invalid_target",
          r.status_code == 400 and r.json().get("error") == "invalid_target", r.text)
    old_rt = tok["refresh_token"]
    tok2 = app.refresh_token(meta["token_endpoint"], refresh_token=old_rt)
    check("refresh rotates", tok2.get("refresh_token") not in (None, old_rt), tok2)
    r = requests.post(meta["token_endpoint"], data={"grant_type": "refresh_token", "refresh_token": old_rt,
                                                    "client_id": p["app_client_id"]}, timeout=10)
    check("reused refresh token -> invalid_grant", r.status_code == 400 and r.json().get("error") == "invalid_grant", r.text)
    r = requests.post(meta["token_endpoint"], data={"grant_type": "refresh_token", "refresh_token": tok2["refresh_token"],
                                                    "client_id": p["app_client_id"]}, timeout=10)
    check("reuse revoked the family", r.status_code == 400 and r.json().get("error") == "invalid_grant", r.text)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - any exception is a failed interop check
        check("no exception", False, repr(e))
    failed = sum(1 for _, ok in checks if not ok)
    print(f"interop: {len(checks) - failed} passed, {failed} failed")
    sys.exit(1 if failed or not checks else 0)
