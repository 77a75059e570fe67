-- Storing and reading credentials through the API functions.
SELECT test.load_keys();
SET ROLE otobot_api;
DO $$
DECLARE
    v_id   uuid;
    v_id2  uuid;
    v      jsonb;
    v_text text;
BEGIN
    v_id := otobot.store_oauth_connection('a0000000-0000-0000-0000-00000000000a', 'google', 'ya29.first', '1//refresh-1',
        now() + interval '1 hour', '{email,drive}', 'a@gmail.test', NULL, 'tooljet', NULL);

    -- The seed's response shape, with the access token and never the refresh token.
    v := otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'google', NULL, true);
    ASSERT v->>'connectionId' = v_id::text AND v->>'service' = 'google' AND (v->>'hasCredentials')::boolean;
    ASSERT v->'credentials' = '{"accessToken": "ya29.first", "tokenType": "Bearer"}'::jsonb, v::text;
    ASSERT v->'metadata'->>'accountIdentifier' = 'a@gmail.test' AND v->'metadata'->'scopes' = '["email","drive"]'::jsonb;
    ASSERT NOT (v->'metadata'->>'tokenExpired')::boolean;
    ASSERT v::text NOT LIKE '%refresh-1%', 'the refresh token never leaves';

    -- Reconnecting the same (service, label) updates the row; a NULL refresh token keeps the stored one.
    v_id2 := otobot.store_oauth_connection('a0000000-0000-0000-0000-00000000000a', 'google', 'ya29.second', NULL,
        now() - interval '1 minute', '{email}', NULL, NULL, 'tooljet', NULL);
    ASSERT v_id2 = v_id, 'same label, same connection';
    v := otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'google', NULL, true);
    ASSERT v->'credentials'->>'accessToken' = 'ya29.second' AND (v->'metadata'->>'tokenExpired')::boolean;
    ASSERT otobot.connection_status(v_id)->>'status' = 'refresh_needed', 'expired access token with a refresh token';

    -- A second, labelled connection to the same service; pick by label or id.
    v_id2 := otobot.store_oauth_connection('a0000000-0000-0000-0000-00000000000a', 'google', 'ya29.work', 'r-work',
        now() + interval '2 hours', '{}', 'a@work.test', 'work', 'tooljet', NULL);
    ASSERT v_id2 <> v_id;
    ASSERT otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'google', NULL, true, NULL, 'work')->'credentials'->>'accessToken' = 'ya29.work';
    ASSERT otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'google', NULL, true, v_id)->'credentials'->>'accessToken' = 'ya29.second';
    ASSERT otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'google', NULL, true, NULL, 'nope')->>'code' = 'connection_not_found';
    ASSERT jsonb_array_length(otobot.list_user_connections('a0000000-0000-0000-0000-00000000000a')->'connections') = 2;
    ASSERT otobot.list_user_connections('a0000000-0000-0000-0000-00000000000a')::text NOT LIKE '%ya29%';
    ASSERT otobot.connection_status(v_id2)->>'status' = 'valid';
    ASSERT otobot.connection_status(v_id2, 3 * 3600)->>'status' = 'refresh_needed', 'inside the refresh window';
    ASSERT otobot.connection_status(gen_random_uuid()) IS NULL;

    -- API keys, for services that accept them.
    v_id := otobot.store_api_key('a0000000-0000-0000-0000-00000000000a', 'notion', 'secret_abc', 'wiki', NULL, 'tooljet', NULL);
    v := otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'notion', NULL, true);
    ASSERT v->'credentials' = '{"apiKey": "secret_abc", "tokenType": "api_key"}'::jsonb, v::text;
    ASSERT otobot.connection_status(v_id)->>'status' = 'valid';

    -- Deactivation: the connection disappears from reads and reports revoked.
    ASSERT otobot.deactivate_connection(v_id, 'a0000000-0000-0000-0000-00000000000a', 'tooljet', 'req-9');
    ASSERT NOT otobot.deactivate_connection(v_id, 'a0000000-0000-0000-0000-00000000000a', 'tooljet', 'req-9'), 'idempotent';
    ASSERT otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'notion', NULL, true)->>'code' = 'connection_not_found';
    ASSERT otobot.connection_status(v_id)->>'status' = 'revoked';
END
$$;

-- Bad input is refused with clear errors.
SELECT test.expect_error($$SELECT otobot.store_api_key('a0000000-0000-0000-0000-00000000000a', 'google', 'k', NULL, NULL, 'test', NULL)$$,
                         '22023', '%does not accept an API key%');
SELECT test.expect_error($$SELECT otobot.store_api_key('a0000000-0000-0000-0000-00000000000a', 'nope', 'k', NULL, NULL, 'test', NULL)$$,
                         '22023', '%unknown service%');
SELECT test.expect_error($$SELECT otobot.store_api_key('a0000000-0000-0000-0000-00000000000a', 'notion', '', NULL, NULL, 'test', NULL)$$,
                         '22023', '%API key must be 1 to%');
SELECT test.expect_error($$SELECT otobot.store_api_key(gen_random_uuid(), 'notion', 'k', NULL, NULL, 'test', NULL)$$,
                         'P0002', '%user not found or inactive%');
SELECT test.expect_error($$SELECT otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'google', NULL, true, NULL, NULL, 'BAD SOURCE', NULL)$$,
                         '22023', '%source must be%');
SELECT test.expect_error($$SELECT otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'google', NULL, true, NULL, NULL, 'n8n', repeat('x', 129))$$,
                         '22023', '%request id%');
RESET ROLE;

-- An inactive user's connections cannot be written.
UPDATE otobot.users SET is_active = false WHERE id = 'b0000000-0000-0000-0000-00000000000b';
SET ROLE otobot_api;
SELECT test.expect_error($$SELECT otobot.store_api_key('b0000000-0000-0000-0000-00000000000b', 'notion', 'k', NULL, NULL, 'test', NULL)$$,
                         'P0002');
RESET ROLE;

-- The DBA reveals with a reason, and it is audited.
SET ROLE otobot_dba;
SELECT test.expect_error($$SELECT otobot.reveal_credential(gen_random_uuid(), 'short')$$, '22023', '%reason%');
RESET ROLE;
DO $$
DECLARE
    v_id uuid;
    v jsonb;
BEGIN
    SELECT id INTO v_id FROM otobot.client_connections WHERE label = 'work';
    SET LOCAL ROLE otobot_dba;
    v := otobot.reveal_credential(v_id, 'incident #7: provider says token leaked');
    RESET ROLE;
    ASSERT v->>'accessToken' = 'ya29.work' AND v->>'refreshToken' = 'r-work';
    ASSERT (SELECT count(*) FROM otobot.credential_access_logs
            WHERE action = 'credential_revealed' AND client_connection_id = v_id
              AND detail->>'reason' LIKE 'incident #7%' AND db_role IS NOT NULL) = 1;
END
$$;
