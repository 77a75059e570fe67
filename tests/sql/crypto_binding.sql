-- A ciphertext is bound to its row and column: moved anywhere, it fails.
SELECT test.load_keys();
SET ROLE otobot_api;
SELECT otobot.store_oauth_connection('a0000000-0000-0000-0000-00000000000a', 'google', 'tok-of-a', 'refresh-of-a',
    now() + interval '1 hour', '{}', NULL, NULL, 'test', NULL);
SELECT otobot.store_oauth_connection('b0000000-0000-0000-0000-00000000000b', 'google', 'tok-of-b', 'refresh-of-b',
    now() + interval '1 hour', '{}', NULL, NULL, 'test', NULL);
RESET ROLE;

DO $$
DECLARE
    v_before bigint;
    v jsonb;
BEGIN
    -- An attacker with write access copies A's ciphertext into B's row.
    UPDATE otobot.client_connections
    SET encrypted_access_token = (SELECT encrypted_access_token FROM otobot.client_connections
                                  WHERE user_id = 'a0000000-0000-0000-0000-00000000000a')
    WHERE user_id = 'b0000000-0000-0000-0000-00000000000b';
    v_before := test.audit_count('decrypt_failed');
    SET LOCAL ROLE otobot_api;
    v := otobot.get_user_credentials('b0000000-0000-0000-0000-00000000000b', 'google', NULL, true, NULL, NULL, 'n8n', 'copied');
    RESET ROLE;
    ASSERT v->>'hasCredentials' = 'false' AND v->>'code' = 'decryption_failed', 'copied ciphertext must not decrypt: ' || v::text;
    ASSERT v::text NOT LIKE '%tok-of-a%';
    ASSERT test.audit_count('decrypt_failed') = v_before + 1, 'a failed decryption is audited';

    -- The refresh token's ciphertext moved into the access-token column fails too.
    UPDATE otobot.client_connections SET encrypted_access_token = encrypted_refresh_token
    WHERE user_id = 'a0000000-0000-0000-0000-00000000000a';
    SET LOCAL ROLE otobot_api;
    v := otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'google', NULL, true);
    RESET ROLE;
    ASSERT v->>'code' = 'decryption_failed', 'a value moved between columns must not decrypt';
END
$$;
-- The failure row survives: it was committed with the call.
DO $$ BEGIN
    ASSERT (SELECT count(*) FROM otobot.credential_access_logs WHERE action = 'decrypt_failed' AND request_id = 'copied') = 1;
END $$;

-- Without a key in the session, reads fail closed with a clear error.
SELECT otobot.otobot_unload_keys();
SET ROLE otobot_api;
SELECT test.expect_error($$SELECT otobot.get_user_credentials('b0000000-0000-0000-0000-00000000000b', 'google', NULL, true)$$,
                         '55000', '%no encryption key%');
SELECT test.expect_error($$SELECT otobot.store_api_key('a0000000-0000-0000-0000-00000000000a', 'notion', 'x', NULL, NULL, 'test', NULL)$$,
                         '55000', '%no encryption key%');
RESET ROLE;

-- A wrong key for version 1 is refused, naming the version.
SELECT test.expect_error($$SELECT otobot.otobot_load_key(1, decode(repeat('02', 32), 'hex'), true)$$, '28000', '%version 1%');
