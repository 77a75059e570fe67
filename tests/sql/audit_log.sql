-- The audit log: append-only for everyone; one row per credential read.
SELECT test.load_keys();
SET ROLE otobot_api;
SELECT otobot.store_oauth_connection('a0000000-0000-0000-0000-00000000000a', 'google', 'tok-a', 'ref-a',
    now() + interval '1 hour', '{email}', 'a@gmail.test', NULL, 'tooljet', 'req-store');
RESET ROLE;

DO $$
DECLARE
    v_before bigint;
    r record;
BEGIN
    -- Creating the connection was audited, with its source and request id.
    SELECT * INTO r FROM otobot.credential_access_logs WHERE action = 'connection_created';
    ASSERT r.source = 'tooljet' AND r.request_id = 'req-store', 'creation audited with source and request id';
    ASSERT r.detail::text NOT LIKE '%tok-a%' AND r.detail::text NOT LIKE '%ref-a%', 'no token in the audit detail';

    -- Every read adds exactly one row, found or not.
    v_before := test.audit_count();
    PERFORM otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'google', NULL, true, NULL, NULL, 'n8n', 'req-1');
    ASSERT test.audit_count() = v_before + 1, 'a read adds exactly one audit row';
    SELECT * INTO r FROM otobot.credential_access_logs ORDER BY id DESC LIMIT 1;
    ASSERT r.action = 'credential_read' AND r.source = 'n8n' AND r.request_id = 'req-1'
        AND r.user_id = 'a0000000-0000-0000-0000-00000000000a' AND r.client_id = 'c1000000-0000-0000-0000-000000000001'
        AND r.service_code = 'google', 'the read row names who, what, from where';
    PERFORM otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'slack', NULL, true, NULL, NULL, 'n8n', 'req-2');
    ASSERT test.audit_count() = v_before + 2, 'a miss adds exactly one audit row';
    ASSERT test.audit_count('credential_not_found') = 1;

    -- Updates and deactivation are audited by the trigger.
    PERFORM otobot.store_oauth_connection('a0000000-0000-0000-0000-00000000000a', 'google', 'tok-a2', NULL,
        now() + interval '1 hour', '{email}', NULL, NULL, 'tooljet', NULL);
    ASSERT test.audit_count('tokens_updated') = 1, 'token update audited';
    PERFORM otobot.deactivate_connection(r.client_connection_id, NULL, 'cli', 'req-3', 'incident 42');
    ASSERT test.audit_count('connection_deactivated') = 1, 'deactivation audited';
    SELECT * INTO r FROM otobot.credential_access_logs WHERE action = 'connection_deactivated';
    ASSERT r.detail->>'reason' = 'incident 42' AND r.source = 'cli';
END
$$;

-- UPDATE, DELETE and TRUNCATE are refused, for the owner and even a superuser.
SELECT test.expect_error($$UPDATE otobot.credential_access_logs SET action = 'nothing'$$, '42501', '%append-only%');
SELECT test.expect_error($$DELETE FROM otobot.credential_access_logs$$, '42501', '%append-only%');
SELECT test.expect_error($$TRUNCATE otobot.credential_access_logs$$, '42501', '%append-only%');
SET ROLE otobot_owner;
SELECT set_config('otobot.scope', 'system', false);
SELECT test.expect_error($$UPDATE otobot.credential_access_logs SET action = 'nothing'$$, '42501', '%permission denied%');
SELECT test.expect_error($$DELETE FROM otobot.credential_access_logs$$, '42501', '%permission denied%');
SELECT test.expect_error($$TRUNCATE otobot.credential_access_logs$$, '42501', '%permission denied%');
SELECT test.expect_error($$DELETE FROM otobot.audit_chain$$, '42501', '%permission denied%');
RESET ROLE;
