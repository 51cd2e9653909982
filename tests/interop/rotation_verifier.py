"""A caching JWKS verifier under signing-key rotation: PyJWT's PyJWKClient.

Reads one token a line on stdin and answers one line each on stdout:
  ok            the kid was in the cached JWK Set and the token verified
  unknown-kid   the kid was not in the cached set (a verifier that never refetches on
                an unknown kid, such as Envoy jwt_authn, would have rejected it)
  failed: ...   verification failed outright
Usage: rotation_verifier.py JWKS_URL CACHE_LIFESPAN_SECONDS
"""

import sys

import jwt


def main() -> None:
    url, lifespan = sys.argv[1], float(sys.argv[2])
    client = jwt.PyJWKClient(url, cache_jwk_set=True, lifespan=lifespan)
    for line in sys.stdin:
        token = line.strip()
        if not token:
            continue
        try:
            kid = jwt.get_unverified_header(token)["kid"]
            # The cached set as it stands (refetched only when its lifespan is over).
            cached = client.match_kid(client.get_signing_keys(), kid)
            key = client.get_signing_key_from_jwt(token)
            jwt.decode(
                token,
                key.key,
                algorithms=["EdDSA", "ES256"],
                options={"verify_aud": False, "require": ["exp", "iat", "sub"]},
            )
            print("ok" if cached is not None else f"unknown-kid {kid}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported to the test
            print(f"failed: {type(e).__name__}: {e}", flush=True)


if __name__ == "__main__":
    main()
