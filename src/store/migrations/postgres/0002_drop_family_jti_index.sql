-- Nothing looks a family's access token up by jti any more: revoking a family
-- blocklists every live access token it minted in the same write, so the blocklist
-- alone says whether one is revoked. One random-keyed index fewer per refresh rotation.
DROP INDEX family_access_tokens_jti;
