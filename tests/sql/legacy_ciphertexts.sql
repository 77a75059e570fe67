-- Values sealed by an earlier implementation of the extension's AES-256-GCM
-- (crypto/tests/fixtures/legacy-<commit>.tsv: key version, key, associated
-- data, plaintext, stored form) decrypt unchanged through the SQL functions,
-- and through the fetch path as the API's role. The stored form is a
-- contract (DESIGN.md "Encryption"): every implementation must pass this.
-- run.sh passes :repo_root.
CREATE TEMP TABLE legacy (version integer, key_hex text, aad text, plaintext_b64 text, stored text);
\set fixture :repo_root '/crypto/tests/fixtures/legacy-6933b8c.tsv'
\set load_fixture '\\copy legacy FROM ' :'fixture' ' WITH (FORMAT text, HEADER true)'
:load_fixture

-- Every key version of the fixture, registered as `otobot migrate` does and
-- loaded into this session (version 1 is _setup.sql's key, already registered).
DO $$ BEGIN
    PERFORM otobot.otobot_register_key(version, decode(key_hex, 'hex')),
            otobot.otobot_load_key(version, decode(key_hex, 'hex'), version = 1)
    FROM (SELECT DISTINCT version, key_hex FROM legacy) k;
END $$;

DO $$
DECLARE
    r record;
    n integer := 0;
    v_plain text;
BEGIN
    ASSERT (SELECT count(*) FROM legacy) = 95, 'the fixture is complete';
    ASSERT (SELECT count(DISTINCT version) FROM legacy) >= 5, 'several key versions';
    ASSERT (SELECT bool_or(plaintext_b64 = '') FROM legacy), 'an empty plaintext';
    ASSERT (SELECT bool_or(aad = '') FROM legacy), 'an empty associated data';
    ASSERT (SELECT max(octet_length(decode(plaintext_b64, 'base64'))) FROM legacy) > 65536, 'a value over 64 KiB';
    FOR r IN SELECT * FROM legacy LOOP
        v_plain := convert_from(decode(r.plaintext_b64, 'base64'), 'UTF8');
        ASSERT otobot.otobot_key_version(r.stored) = r.version, 'key version of row ' || n;
        ASSERT otobot.otobot_decrypt(r.stored, r.aad) = v_plain, 'legacy row ' || n || ' decrypts to its plaintext';
        -- Still bound to its associated data.
        PERFORM test.expect_error(format('SELECT otobot.otobot_decrypt(%L, %L)', r.stored, r.aad || 'x'), 'XX001');
        -- Rotation re-seals it under the current version, same plaintext.
        ASSERT otobot.otobot_decrypt(otobot.otobot_reencrypt(r.stored, r.aad), r.aad) = v_plain;
        ASSERT otobot.otobot_key_version(otobot.otobot_reencrypt(r.stored, r.aad)) = 1;
        n := n + 1;
    END LOOP;
END
$$;

-- The fetch path: a legacy value stored in a connection's row, read by the
-- API's role through get_user_credentials (the fixture's associated data
-- names this connection id).
INSERT INTO otobot.client_connections (id, client_id, user_id, service_id, credential_type,
                                       encrypted_access_token, encrypted_refresh_token, token_expires_at)
SELECT '3f2504e0-4f89-41d3-9a0c-0305e82c3301', 'c1000000-0000-0000-0000-000000000001',
       'a0000000-0000-0000-0000-00000000000a', (SELECT id FROM otobot.services WHERE service_code = 'google'),
       'oauth2',
       (SELECT stored FROM legacy WHERE aad = '3f2504e0-4f89-41d3-9a0c-0305e82c3301:encrypted_access_token'
        ORDER BY length(stored) DESC LIMIT 1),
       (SELECT stored FROM legacy WHERE aad = '3f2504e0-4f89-41d3-9a0c-0305e82c3301:encrypted_refresh_token'
        ORDER BY length(stored) DESC LIMIT 1),
       now() + interval '1 hour';

DO $$
DECLARE
    v jsonb;
    v_want text := (SELECT convert_from(decode(plaintext_b64, 'base64'), 'UTF8') FROM legacy
                    WHERE aad = '3f2504e0-4f89-41d3-9a0c-0305e82c3301:encrypted_access_token'
                    ORDER BY length(stored) DESC LIMIT 1);
BEGIN
    SET LOCAL ROLE otobot_api;
    v := otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'google', NULL, true, NULL, NULL, 'n8n', 'legacy');
    RESET ROLE;
    ASSERT v->>'hasCredentials' = 'true', 'a legacy value is fetched: ' || left(v::text, 200);
    ASSERT v->'credentials'->>'accessToken' = v_want, 'the fetched token is the legacy plaintext';
END
$$;
