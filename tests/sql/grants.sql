-- Grants (0014): a credential leaves only with its user's live grant for that
-- service, or for a caller the API declares trusted; every release names its
-- grant in the audit row; every refusal is audited. Run as otobot_api with
-- the key loaded, like the API.
SELECT test.load_keys();

-- The test's grant tokens are plain strings; the vault sees their SHA-256.
CREATE FUNCTION test.h(p_token text) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(convert_to(p_token, 'UTF8'))
$$;
CREATE FUNCTION test.grant_of(p_token text) RETURNS otobot.grants LANGUAGE sql SECURITY DEFINER AS $$
    SELECT * FROM otobot.grants WHERE token_hash = sha256(convert_to(p_token, 'UTF8'))
$$;
GRANT EXECUTE ON FUNCTION test.h(text), test.grant_of(text) TO PUBLIC;

SET ROLE otobot_api;
SELECT otobot.store_oauth_connection('a0000000-0000-0000-0000-00000000000a', 'google', 'tok-a', 'r-a',
    now() + interval '1 hour', '{}', NULL, NULL, 'tooljet', NULL);
SELECT otobot.store_api_key('a0000000-0000-0000-0000-00000000000a', 'notion', 'tok-a-notion', NULL, NULL, 'tooljet', NULL);
SELECT otobot.store_oauth_connection('b0000000-0000-0000-0000-00000000000b', 'google', 'tok-b', 'r-b',
    now() + interval '1 hour', '{}', NULL, NULL, 'tooljet', NULL);
SELECT otobot.store_oauth_connection('c0000000-0000-0000-0000-00000000000c', 'google', 'tok-c', 'r-c',
    now() + interval '1 hour', '{}', NULL, NULL, 'tooljet', NULL);

-- A standing grant of A (google only), a run grant of A (every service), and
-- C's grant (another client).
SELECT otobot.create_standing_grant('a0000000-0000-0000-0000-00000000000a', 'nightly report', '{google}',
    test.h('grant-a-standing'), now() + interval '30 days', 'tooljet', NULL);
SELECT otobot.mint_run_grant('a0000000-0000-0000-0000-00000000000a', 'drive-to-notion', NULL,
    test.h('grant-a-run'), 900, 'tooljet', NULL);
SELECT otobot.create_standing_grant('c0000000-0000-0000-0000-00000000000c', 'c sync', '{google}',
    test.h('grant-c'), now() + interval '1 day', 'tooljet', NULL);

DO $$
DECLARE
    v      jsonb;
    g      otobot.grants;
    r      otobot.credential_access_logs;
    v_b    uuid := (test.connection_of('b0000000-0000-0000-0000-00000000000b', 'google')).id;
    v_read bigint;
BEGIN
    -- A's grant releases A's token, and the audit row names the grant.
    g := test.grant_of('grant-a-standing');
    ASSERT g.kind = 'standing' AND g.services = '{google}' AND g.workflow = 'nightly report';
    v := otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'google', test.h('grant-a-standing'), false,
                                     NULL, NULL, 'n8n', 'req-1');
    ASSERT v->'credentials'->>'accessToken' = 'tok-a', v::text;
    r := test.last_audit();
    ASSERT r.action = 'credential_read' AND r.user_id = 'a0000000-0000-0000-0000-00000000000a' AND r.source = 'n8n';
    ASSERT r.detail = jsonb_build_object('grant_id', g.id, 'grant_kind', 'standing', 'workflow', 'nightly report'), r.detail::text;

    -- The run grant covers every service.
    v := otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'notion', test.h('grant-a-run'), false);
    ASSERT v->'credentials'->>'apiKey' = 'tok-a-notion', v::text;
    ASSERT (test.last_audit()).detail->>'grant_id' = (test.grant_of('grant-a-run')).id::text;
    ASSERT (test.last_audit()).detail->>'grant_kind' = 'run';

    -- SECURITY: A's grant never releases B's secret: not by user, not by B's
    -- connection id, not with the trusted flag set beside it.
    v_read := test.audit_count('credential_read');
    v := otobot.get_user_credentials('b0000000-0000-0000-0000-00000000000b', 'google', test.h('grant-a-standing'), false);
    ASSERT v = '{"hasCredentials": false, "code": "grant_invalid", "reason": "other_user"}'::jsonb, v::text;
    r := test.last_audit();
    ASSERT r.action = 'credential_refused' AND r.user_id = 'b0000000-0000-0000-0000-00000000000b'
       AND r.client_id = 'c1000000-0000-0000-0000-000000000001'
       AND r.detail = jsonb_build_object('reason', 'other_user', 'grant_id', g.id), r.detail::text;
    v := otobot.get_user_credentials('b0000000-0000-0000-0000-00000000000b', 'google', test.h('grant-a-run'), false, v_b);
    ASSERT v->>'code' = 'grant_invalid' AND v::text NOT LIKE '%tok-b%', v::text;
    v := otobot.get_user_credentials('b0000000-0000-0000-0000-00000000000b', 'google', test.h('grant-a-run'), true);
    ASSERT v->>'code' = 'grant_invalid' AND v::text NOT LIKE '%tok-b%', 'a grant presented is checked, trusted or not';
    -- Another client's grant is as useless.
    v := otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'google', test.h('grant-c'), false);
    ASSERT v->>'code' = 'grant_invalid' AND v->>'reason' = 'other_user', v::text;
    ASSERT test.audit_count('credential_read') = v_read, 'no secret left';

    -- No grant: refused (and audited), unless the caller is trusted.
    v := otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'google', NULL, false);
    ASSERT v = '{"hasCredentials": false, "code": "grant_required", "reason": "grant_required"}'::jsonb, v::text;
    ASSERT (test.last_audit()).action = 'credential_refused' AND (test.last_audit()).detail = '{"reason": "grant_required"}';
    ASSERT otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'google', NULL, NULL)->>'code' = 'grant_required',
        'an unknown trust is no trust';
    v := otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'google', NULL, true, NULL, NULL, 'legacy', NULL);
    ASSERT v->'credentials'->>'accessToken' = 'tok-a';
    ASSERT (test.last_audit()).detail = '{"trusted": true}' AND (test.last_audit()).source = 'legacy';
    v_read := test.audit_count('credential_read');

    -- A forged grant, and a grant that does not cover the service.
    v := otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'google', test.h('grant-forged'), false);
    ASSERT v->>'code' = 'grant_invalid' AND v->>'reason' = 'unknown', v::text;
    ASSERT NOT (test.last_audit()).detail ? 'grant_id';
    v := otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'notion', test.h('grant-a-standing'), false);
    ASSERT v->>'code' = 'grant_invalid' AND v->>'reason' = 'service_not_covered', v::text;
    ASSERT test.audit_count('credential_read') = v_read;

    -- A valid grant still says when there is no connection, naming the grant.
    v := otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'slack', test.h('grant-a-run'), false);
    ASSERT v->>'code' = 'connection_not_found';
    ASSERT (test.last_audit()).action = 'credential_not_found' AND (test.last_audit()).detail ? 'grant_id';
END
$$;

-- Revoked and expired grants refuse.
DO $$
DECLARE
    v jsonb;
    g otobot.grants := test.grant_of('grant-a-standing');
BEGIN
    -- B may not revoke A's grant, nor C's admin-less client reach it; A may.
    ASSERT NOT otobot.revoke_grant(g.id, 'b0000000-0000-0000-0000-00000000000b', 'tooljet', NULL);
    ASSERT NOT otobot.revoke_grant(g.id, 'c0000000-0000-0000-0000-00000000000c', 'tooljet', NULL);
    ASSERT otobot.revoke_grant(g.id, 'a0000000-0000-0000-0000-00000000000a', 'tooljet', 'req-revoke');
    ASSERT NOT otobot.revoke_grant(g.id, 'a0000000-0000-0000-0000-00000000000a', 'tooljet', NULL), 'once';
    ASSERT (test.last_audit()).action = 'grant_revoked' AND (test.last_audit()).detail->>'grant_id' = g.id::text
       AND (test.last_audit()).detail->>'by' = 'a0000000-0000-0000-0000-00000000000a';
    v := otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'google', test.h('grant-a-standing'), false);
    ASSERT v->>'code' = 'grant_invalid' AND v->>'reason' = 'revoked', v::text;
    ASSERT (test.last_audit()).detail = jsonb_build_object('reason', 'revoked', 'grant_id', g.id);
END
$$;
RESET ROLE;
-- Time passes (an administrator may shorten a grant, never extend it).
UPDATE otobot.grants SET expires_at = now() - interval '1 second' WHERE token_hash = test.h('grant-a-run');
SELECT test.expect_error($$UPDATE otobot.grants SET expires_at = now() + interval '1 day' WHERE token_hash = test.h('grant-a-run')$$,
                         '42501', '%cannot be extended%');
SELECT test.expect_error($$UPDATE otobot.grants SET revoked_at = NULL WHERE token_hash = test.h('grant-a-standing')$$,
                         '42501', '%stays revoked%');
SELECT test.expect_error($$UPDATE otobot.grants SET services = '{google,slack}' WHERE token_hash = test.h('grant-c')$$,
                         '42501', '%only revoked or shortened%');
SELECT test.expect_error($$UPDATE otobot.grants SET user_id = 'a0000000-0000-0000-0000-00000000000a' WHERE token_hash = test.h('grant-c')$$,
                         '42501');
SET ROLE otobot_api;
DO $$
DECLARE
    v jsonb;
BEGIN
    v := otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'google', test.h('grant-a-run'), false);
    ASSERT v->>'code' = 'grant_invalid' AND v->>'reason' = 'expired', v::text;
END
$$;
RESET ROLE;

-- Not even through the owner: A's grant does not release B's secret to a
-- function run as otobot_owner, and the owner's direct reads see no grant
-- outside a scope (forced row-level security).
SET ROLE otobot_owner;
DO $$
BEGIN
    ASSERT otobot.get_user_credentials('b0000000-0000-0000-0000-00000000000b', 'google', test.h('grant-a-run'), false)->>'code'
        = 'grant_invalid';
    ASSERT (SELECT count(*) FROM otobot.grants) = 0, 'forced RLS: no scope, no grant';
END
$$;
RESET ROLE;

-- Creating grants: in one's own name only, known services, within a year.
SET ROLE otobot_api;
SELECT test.expect_error($$SELECT otobot.create_standing_grant('a0000000-0000-0000-0000-00000000000a', 'w', '{google}',
    test.h('g-late'), now() + interval '1 year 1 day', 'tooljet', NULL)$$, '22023', '%one year%');
SELECT test.expect_error($$SELECT otobot.create_standing_grant('a0000000-0000-0000-0000-00000000000a', 'w', '{google}',
    test.h('g-past'), now() - interval '1 minute', 'tooljet', NULL)$$, '22023', '%one minute%');
SELECT test.expect_error($$SELECT otobot.create_standing_grant('a0000000-0000-0000-0000-00000000000a', 'w', '{nope}',
    test.h('g-svc'), now() + interval '1 day', 'tooljet', NULL)$$, '22023', '%unknown service%');
SELECT test.expect_error($$SELECT otobot.create_standing_grant('a0000000-0000-0000-0000-00000000000a', 'w', NULL,
    test.h('g-null'), now() + interval '1 day', 'tooljet', NULL)$$, '22023', '%names its services%');
SELECT test.expect_error($$SELECT otobot.create_standing_grant('a0000000-0000-0000-0000-00000000000a', '', '{google}',
    test.h('g-wf'), now() + interval '1 day', 'tooljet', NULL)$$, '22023', '%workflow%');
SELECT test.expect_error($$SELECT otobot.create_standing_grant('a0000000-0000-0000-0000-00000000000a', 'w', '{google}',
    '\x00', now() + interval '1 day', 'tooljet', NULL)$$, '22023', '%32 bytes%');
SELECT test.expect_error($$SELECT otobot.mint_run_grant('a0000000-0000-0000-0000-00000000000a', 'w', NULL,
    test.h('g-ttl'), 0, 'tooljet', NULL)$$, '22023', '%1 to 86400%');
SELECT test.expect_error($$SELECT otobot.mint_run_grant(gen_random_uuid(), 'w', NULL,
    test.h('g-nobody'), 60, 'tooljet', NULL)$$, 'P0002');
SELECT test.expect_error($$SELECT otobot.create_standing_grant('a0000000-0000-0000-0000-00000000000a', 'w', '{google}',
    test.h('grant-c'), now() + interval '1 day', 'tooljet', NULL)$$, '23505');
RESET ROLE;

-- Listing: own grants; an admin sees the client's (never another client's),
-- a user may not ask for the client's; an admin revokes within the client.
SET ROLE otobot_api;
SELECT otobot.create_standing_grant('b0000000-0000-0000-0000-00000000000b', 'b sync', '{google,slack}',
    test.h('grant-b'), now() + interval '7 days', 'tooljet', NULL);
DO $$
DECLARE
    v jsonb;
BEGIN
    v := otobot.list_grants('a0000000-0000-0000-0000-00000000000a', false);
    -- A's revoked standing grant is listed; the expired run grant no longer.
    ASSERT jsonb_array_length(v) = 1 AND v->0->>'workflow' = 'nightly report' AND v->0->>'status' = 'revoked', v::text;
    ASSERT v::text NOT LIKE '%token%' AND v::text NOT LIKE '%hash%';
    v := otobot.list_grants('d0000000-0000-0000-0000-00000000000d', true);
    ASSERT (SELECT array_agg(e->>'workflow' ORDER BY e->>'workflow') FROM jsonb_array_elements(v) e) = '{b sync,nightly report}', v::text;
    ASSERT (SELECT bool_and(e->>'clientId' = 'c1000000-0000-0000-0000-000000000001') FROM jsonb_array_elements(v) e);
    ASSERT (SELECT bool_and(e ? 'userEmail') FROM jsonb_array_elements(v) e);
    ASSERT jsonb_array_length(otobot.list_grants('d0000000-0000-0000-0000-00000000000d', false)) = 0, 'own: none';
    ASSERT otobot.revoke_grant((test.grant_of('grant-b')).id, 'd0000000-0000-0000-0000-00000000000d', 'tooljet', NULL),
        'the client''s admin revokes';
    ASSERT NOT otobot.revoke_grant((test.grant_of('grant-c')).id, 'd0000000-0000-0000-0000-00000000000d', 'tooljet', NULL),
        'not another client''s';
    ASSERT otobot.get_user_credentials('b0000000-0000-0000-0000-00000000000b', 'google', test.h('grant-b'), false)->>'reason' = 'revoked';
    ASSERT otobot.get_user_credentials('c0000000-0000-0000-0000-00000000000c', 'google', test.h('grant-c'), false)
        ->'credentials'->>'accessToken' = 'tok-c', 'C''s grant still works for C';
END
$$;
SELECT test.expect_error($$SELECT otobot.list_grants('a0000000-0000-0000-0000-00000000000a', true)$$, '42501', '%only an admin%');
-- The API role never reads the table; the auditor reads it without the hashes.
SELECT test.expect_error('SELECT * FROM otobot.grants', '42501');
RESET ROLE;
SET ROLE otobot_auditor;
SELECT count(*) FROM (SELECT id, user_id, workflow, services, expires_at, revoked_at FROM otobot.grants) g;
SELECT test.expect_error('SELECT token_hash FROM otobot.grants', '42501');
RESET ROLE;

-- Every release names its grant or its trusted caller; the chain covers it.
DO $$
BEGIN
    ASSERT (SELECT count(*) FROM test.audit_rows() r WHERE r.action = 'credential_read') = 4;
    ASSERT NOT EXISTS (SELECT 1 FROM test.audit_rows() r
                       WHERE r.action = 'credential_read' AND NOT (r.detail ? 'grant_id' OR r.detail = '{"trusted": true}'));
    ASSERT (SELECT count(*) FROM test.audit_rows() r WHERE r.action = 'credential_refused') = 12;
    ASSERT (SELECT count(*) FROM test.audit_rows() r WHERE r.action = 'grant_created') = 4;
    ASSERT (SELECT count(*) FROM test.audit_rows() r WHERE r.action = 'grant_revoked') = 2;
    ASSERT (SELECT count(*) FROM test.audit_rows() r WHERE r.action = 'grant_shortened') = 1;
    ASSERT (SELECT bool_and(octet_length(token_hash) = 32) FROM otobot.grants);
    ASSERT test.seal_all() > 0;
    ASSERT (SELECT ok FROM otobot.verify_audit_chain()), 'the chain verifies';
END
$$;
