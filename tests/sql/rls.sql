-- Row-level security: a session scoped to a user sees only that user's rows.
SELECT test.load_keys();
SET ROLE otobot_api;
SELECT otobot.store_oauth_connection('a0000000-0000-0000-0000-00000000000a', 'google', 'tok-a', 'ref-a',
    now() + interval '1 hour', '{}', 'a@gmail.test', NULL, 'test', NULL);
SELECT otobot.store_oauth_connection('b0000000-0000-0000-0000-00000000000b', 'google', 'tok-b', 'ref-b',
    now() + interval '1 hour', '{}', 'b@gmail.test', NULL, 'test', NULL);
SELECT otobot.store_api_key('c0000000-0000-0000-0000-00000000000c', 'notion', 'secret_c', NULL, NULL, 'test', NULL);
RESET ROLE;

-- Even the owner of the tables obeys the policies (FORCE ROW LEVEL SECURITY).
BEGIN;
SET LOCAL ROLE otobot_owner;
DO $$ BEGIN
    ASSERT (SELECT count(*) FROM otobot.client_connections) = 0, 'no scope must see nothing';
    ASSERT (SELECT count(*) FROM otobot.users) = 0, 'no scope must see no user';
END $$;
SELECT set_config('otobot.scope', 'user', true), set_config('otobot.user_id', 'a0000000-0000-0000-0000-00000000000a', true),
       set_config('otobot.client_id', 'c1000000-0000-0000-0000-000000000001', true);
DO $$ BEGIN
    ASSERT (SELECT count(*) FROM otobot.client_connections) = 1, 'user A sees exactly their own connection';
    ASSERT (SELECT count(*) FROM otobot.client_connections WHERE user_id = 'b0000000-0000-0000-0000-00000000000b') = 0,
        'user A sees none of user B''s rows, same client or not';
    ASSERT (SELECT count(*) FROM otobot.credential_access_logs WHERE user_id <> 'a0000000-0000-0000-0000-00000000000a') = 0,
        'user A sees none of the others'' audit rows';
    ASSERT (SELECT count(*) FROM otobot.users) = 1, 'user A sees only their own user row';
END $$;
-- User A cannot write a row for user B.
DO $$
DECLARE n int;
BEGIN
    UPDATE otobot.client_connections SET label = 'hijack' WHERE user_id = 'b0000000-0000-0000-0000-00000000000b';
    GET DIAGNOSTICS n = ROW_COUNT;
    ASSERT n = 0, 'user A updated user B''s row';
END $$;
SELECT test.expect_error($$INSERT INTO otobot.client_connections (client_id, user_id, service_id, credential_type, encrypted_access_token)
    VALUES ('c1000000-0000-0000-0000-000000000001', 'b0000000-0000-0000-0000-00000000000b', 1, 'oauth2', 'x')$$, '42501', '%row-level security%');

-- A client admin sees their own client's connection metadata, not another client's.
SELECT set_config('otobot.scope', 'admin', true), set_config('otobot.user_id', 'd0000000-0000-0000-0000-00000000000d', true),
       set_config('otobot.client_id', 'c1000000-0000-0000-0000-000000000001', true);
DO $$ BEGIN
    ASSERT (SELECT count(*) FROM otobot.client_connections) = 2, 'admin sees both connections of client one';
    ASSERT (SELECT count(*) FROM otobot.client_connections WHERE client_id = 'c2000000-0000-0000-0000-000000000002') = 0,
        'admin sees nothing of client two';
END $$;
ROLLBACK;

-- Through the API: user B cannot get user A's credential, even in the same client.
SET ROLE otobot_api;
DO $$ BEGIN
    ASSERT otobot.get_user_credentials('b0000000-0000-0000-0000-00000000000b', 'google', NULL, true)->'credentials'->>'accessToken' = 'tok-b';
    ASSERT otobot.get_user_credentials('c0000000-0000-0000-0000-00000000000c', 'google', NULL, true)->>'code' = 'connection_not_found';
    ASSERT (otobot.list_user_connections('b0000000-0000-0000-0000-00000000000b')->'connections'->0->>'account_identifier') = 'b@gmail.test';
    ASSERT jsonb_array_length(otobot.list_user_connections('b0000000-0000-0000-0000-00000000000b')->'connections') = 1;
END $$;
-- A connection id of user A asked for with user B's id is not found.
DO $$
DECLARE v_a uuid;
BEGIN
    v_a := (otobot.list_user_connections('a0000000-0000-0000-0000-00000000000a')->'connections'->0->>'id')::uuid;
    ASSERT otobot.get_user_credentials('b0000000-0000-0000-0000-00000000000b', 'google', NULL, true, v_a)->>'code' = 'connection_not_found';
    -- User B cannot deactivate A's connection; admin D of the same client can.
    ASSERT NOT otobot.deactivate_connection(v_a, 'b0000000-0000-0000-0000-00000000000b', 'tooljet', NULL);
    ASSERT NOT otobot.deactivate_connection(v_a, 'c0000000-0000-0000-0000-00000000000c', 'tooljet', NULL);
    ASSERT otobot.deactivate_connection(v_a, 'd0000000-0000-0000-0000-00000000000d', 'tooljet', NULL, 'offboarding');
END $$;
