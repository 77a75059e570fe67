-- The portal (0012): sessions and each user's own access history, through
-- the API role.
SELECT test.load_keys();

-- Nothing of it is reachable but through the functions.
SET ROLE otobot_api;
SELECT test.expect_error('SELECT * FROM otobot.portal_sessions', '42501');
SELECT test.expect_error($$INSERT INTO otobot.portal_sessions (id_hash, user_id, client_id, expires_at)
    VALUES (sha256('x'), 'a0000000-0000-0000-0000-00000000000a', 'c1000000-0000-0000-0000-000000000001', now())$$, '42501');
RESET ROLE;
SET ROLE otobot_auditor;
SELECT user_id, expires_at, ended_at FROM otobot.portal_sessions;
SELECT test.expect_error('SELECT id_hash FROM otobot.portal_sessions', '42501');
RESET ROLE;
SET ROLE otobot_dba;
SELECT test.expect_error($$SELECT otobot.portal_session_actor(sha256('x'), 60)$$, '42501');
SELECT test.expect_error($$SELECT otobot.list_own_access_history('a0000000-0000-0000-0000-00000000000a', NULL, 10, true, NULL)$$, '42501');
RESET ROLE;

-- Sessions: live, then ended; unknown; expired; idle; user deactivated.
SET ROLE otobot_api;
DO $$
DECLARE
    v_exp timestamptz;
    v     jsonb;
BEGIN
    v_exp := otobot.start_portal_session('a0000000-0000-0000-0000-00000000000a', sha256('session-a'), 3600, 'req-1');
    ASSERT v_exp BETWEEN now() + interval '59 minutes' AND now() + interval '61 minutes', 'expiry is the lifetime asked';
    v := otobot.portal_session_actor(sha256('session-a'), 600);
    ASSERT v->>'userId' = 'a0000000-0000-0000-0000-00000000000a' AND v->>'role' = 'user'
       AND v->>'clientId' = 'c1000000-0000-0000-0000-000000000001', 'a live session names its user: ' || v::text;
    ASSERT otobot.portal_session_actor(sha256('session-unknown'), 600) IS NULL, 'an unknown session is nobody';
    ASSERT otobot.end_portal_session(sha256('session-a')), 'logout ends a live session';
    ASSERT NOT otobot.end_portal_session(sha256('session-a')), 'a second logout finds nothing live';
    ASSERT otobot.portal_session_actor(sha256('session-a'), 600) IS NULL, 'an ended session is nobody';

    PERFORM otobot.start_portal_session('b0000000-0000-0000-0000-00000000000b', sha256('session-b'), 3600, NULL);
    PERFORM otobot.start_portal_session('d0000000-0000-0000-0000-00000000000d', sha256('session-d'), 3600, NULL);
    ASSERT otobot.portal_session_actor(sha256('session-d'), 600)->>'role' = 'admin';
END $$;
SELECT test.expect_error($$SELECT otobot.start_portal_session('a0000000-0000-0000-0000-00000000000a', '\x00', 3600, NULL)$$, '22023');
SELECT test.expect_error($$SELECT otobot.start_portal_session('a0000000-0000-0000-0000-00000000000a', sha256('s'), 10, NULL)$$, '22023');
SELECT test.expect_error($$SELECT otobot.start_portal_session('a0000000-0000-0000-0000-00000000000a', sha256('s'), 9999999, NULL)$$, '22023');
SELECT test.expect_error($$SELECT otobot.start_portal_session(gen_random_uuid(), sha256('s'), 3600, NULL)$$, 'P0002');
SELECT test.expect_error($$SELECT otobot.portal_session_actor(sha256('session-b'), 0)$$, '22023');
-- A session id is unique: the same hash twice is refused.
SELECT test.expect_error($$SELECT otobot.start_portal_session('b0000000-0000-0000-0000-00000000000b', sha256('session-b'), 3600, NULL)$$, '23505');
RESET ROLE;

-- Expired and idle sessions are nobody (time moved by the superuser).
UPDATE otobot.portal_sessions SET expires_at = now() - interval '1 second' WHERE id_hash = sha256('session-b');
UPDATE otobot.portal_sessions SET last_seen_at = now() - interval '11 minutes' WHERE id_hash = sha256('session-d');
SET ROLE otobot_api;
DO $$ BEGIN
    ASSERT otobot.portal_session_actor(sha256('session-b'), 600) IS NULL, 'an expired session is nobody';
    ASSERT otobot.portal_session_actor(sha256('session-d'), 600) IS NULL, 'an idle session is nobody';
    ASSERT otobot.portal_session_actor(sha256('session-d'), 3600)->>'role' = 'admin', 'within a longer idle timeout it lives';
END $$;
RESET ROLE;
DO $$ BEGIN
    ASSERT (SELECT last_seen_at > now() - interval '5 seconds' FROM otobot.portal_sessions WHERE id_hash = sha256('session-d')),
        'using a session records its use';
END $$;

-- A deactivated user's sessions die with it.
SET ROLE otobot_api;
SELECT otobot.start_portal_session('b0000000-0000-0000-0000-00000000000b', sha256('session-b2'), 3600, NULL);
SELECT otobot.deactivate_user('d0000000-0000-0000-0000-00000000000d', 'b0000000-0000-0000-0000-00000000000b', 'tooljet', NULL);
DO $$ BEGIN
    ASSERT otobot.portal_session_actor(sha256('session-b2'), 600) IS NULL, 'a deactivated user''s session is nobody';
END $$;
RESET ROLE;

-- At most 20 live sessions per user: the 21st ends the oldest.
SET ROLE otobot_api;
SELECT otobot.start_portal_session('c0000000-0000-0000-0000-00000000000c', sha256(('c-' || i)::bytea), 3600, NULL)
FROM generate_series(1, 20) i;
RESET ROLE;
UPDATE otobot.portal_sessions SET created_at = now() - interval '1 hour' WHERE id_hash = sha256('c-1');
SET ROLE otobot_api;
SELECT otobot.start_portal_session('c0000000-0000-0000-0000-00000000000c', sha256('c-21'), 3600, NULL);
RESET ROLE;
DO $$ BEGIN
    ASSERT (SELECT count(*) FROM otobot.portal_sessions
            WHERE user_id = 'c0000000-0000-0000-0000-00000000000c' AND ended_at IS NULL) = 20, 'twenty live sessions';
    ASSERT (SELECT ended_at IS NOT NULL FROM otobot.portal_sessions WHERE id_hash = sha256('c-1')), 'the oldest one ended';
END $$;

-- ---------------------------------------------------------------------------
-- Access history
-- ---------------------------------------------------------------------------
SET ROLE otobot_api;
SELECT otobot.store_oauth_connection('a0000000-0000-0000-0000-00000000000a', 'google', 'tok-a', 'ref-a',
    now() + interval '1 hour', '{}', 'a@gmail.test', 'work', 'test', NULL);
SELECT otobot.store_api_key('c0000000-0000-0000-0000-00000000000c', 'notion', 'secret_c', NULL, NULL, 'test', NULL);
SELECT otobot.store_api_key('d0000000-0000-0000-0000-00000000000d', 'openai', 'sk-d', NULL, NULL, 'test', NULL);
-- Reads: 30 of A's google token by n8n, one of C's by another caller, one of D's.
SELECT otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'google', NULL, true, NULL, NULL, 'n8n', 'req-' || i)
FROM generate_series(1, 30) i;
SELECT otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'slack', NULL, true, NULL, NULL, 'n8n', NULL);
SELECT otobot.get_user_credentials('c0000000-0000-0000-0000-00000000000c', 'notion', NULL, true, NULL, NULL, 'cron', NULL);
SELECT otobot.get_user_credentials('d0000000-0000-0000-0000-00000000000d', 'openai', NULL, true, NULL, NULL, 'n8n', NULL);

DO $$
DECLARE
    p1 jsonb; p2 jsonb; p3 jsonb; v jsonb; all_a jsonb;
BEGIN
    -- Newest first, 25 a page, then the rest; nothing lost or repeated.
    p1 := otobot.list_own_access_history('a0000000-0000-0000-0000-00000000000a', NULL, 25, true, NULL);
    ASSERT jsonb_array_length(p1->'entries') = 25, 'a full first page';
    ASSERT (p1->'entries'->0->>'action') = 'credential_not_found' AND (p1->'entries'->0->>'service') = 'slack',
        'the newest first: ' || (p1->'entries'->0)::text;
    ASSERT (p1->'entries'->1->>'action') = 'credential_read' AND (p1->'entries'->1->>'source') = 'n8n'
       AND (p1->'entries'->1->>'requestId') = 'req-30' AND (p1->'entries'->1->>'label') = 'work'
       AND (p1->'entries'->1->>'accountIdentifier') = 'a@gmail.test', 'a read names its caller, request and connection: ' || (p1->'entries'->1)::text;
    ASSERT (p1->>'nextBefore')::bigint = (p1->'entries'->24->>'id')::bigint, 'nextBefore is the last id of the page';
    p2 := otobot.list_own_access_history('a0000000-0000-0000-0000-00000000000a', (p1->>'nextBefore')::bigint, 25, true, NULL);
    ASSERT jsonb_array_length(p2->'entries') = 6 AND p2->'nextBefore' = 'null'::jsonb, 'the last page: ' || p2::text;
    ASSERT (p2->'entries'->5->>'requestId') = 'req-1', 'the oldest read last';
    ASSERT (SELECT count(DISTINCT e->>'id') FROM jsonb_array_elements((p1->'entries') || (p2->'entries')) e) = 31,
        'pages neither lose nor repeat an entry';
    ASSERT NOT (p1::text || p2::text) LIKE '%tok-a%', 'no secret in the history';

    -- Reads only by default; everything on request (the connection's creation too).
    all_a := otobot.list_own_access_history('a0000000-0000-0000-0000-00000000000a', NULL, 100, false, NULL);
    ASSERT EXISTS (SELECT 1 FROM jsonb_array_elements(all_a->'entries') e WHERE e->>'action' = 'connection_created'),
        'kind all includes connection changes';
    ASSERT NOT EXISTS (SELECT 1 FROM jsonb_array_elements(p1->'entries') e WHERE e->>'action' = 'connection_created'),
        'reads only by default';
    v := otobot.list_own_access_history('a0000000-0000-0000-0000-00000000000a', NULL, 100, true, 'slack');
    ASSERT jsonb_array_length(v->'entries') = 1, 'filtered by service';

    -- SECURITY: only one's own rows: user A sees none of C's, admin D none of
    -- A's even in the same client (an admin's history is their own).
    ASSERT NOT all_a::text LIKE '%c0000000-0000-0000-0000-00000000000c%' AND NOT all_a::text LIKE '%cron%',
        'user A sees nothing of user C';
    v := otobot.list_own_access_history('d0000000-0000-0000-0000-00000000000d', NULL, 100, false, NULL);
    ASSERT NOT EXISTS (SELECT 1 FROM jsonb_array_elements(v->'entries') e
                       WHERE e->>'service' IN ('google', 'slack') OR e->>'source' = 'cron'),
        'admin D sees none of the other users'' rows: ' || v::text;
    ASSERT EXISTS (SELECT 1 FROM jsonb_array_elements(v->'entries') e WHERE e->>'service' = 'openai'), 'admin D sees their own';
    v := otobot.list_own_access_history('c0000000-0000-0000-0000-00000000000c', NULL, 100, true, NULL);
    ASSERT jsonb_array_length(v->'entries') = 1 AND (v->'entries'->0->>'source') = 'cron', 'user C sees their one read';
END $$;
-- Bounded and validated; a deactivated user gets nothing.
SELECT test.expect_error($$SELECT otobot.list_own_access_history('a0000000-0000-0000-0000-00000000000a', NULL, 101, true, NULL)$$, '22023');
SELECT test.expect_error($$SELECT otobot.list_own_access_history('a0000000-0000-0000-0000-00000000000a', NULL, 0, true, NULL)$$, '22023');
SELECT test.expect_error($$SELECT otobot.list_own_access_history('a0000000-0000-0000-0000-00000000000a', 0, 10, true, NULL)$$, '22023');
SELECT test.expect_error($$SELECT otobot.list_own_access_history('b0000000-0000-0000-0000-00000000000b', NULL, 10, true, NULL)$$, 'P0002');
-- Session state is not an input: the caller cannot set it (0008), and the
-- function sets its own scope anyway.
SELECT test.expect_error($$SELECT set_config('otobot.scope', 'system', false)$$, '42501');
SELECT test.expect_error($$SELECT set_config('otobot.user_id', 'c0000000-0000-0000-0000-00000000000c', false)$$, '42501');
DO $$ BEGIN
    ASSERT NOT otobot.list_own_access_history('a0000000-0000-0000-0000-00000000000a', NULL, 100, false, NULL)::text LIKE '%cron%',
        'a caller''s SET of the scope does not widen the history';
END $$;
RESET ROLE;

-- ---------------------------------------------------------------------------
-- The history names the grant and workflow of each read (0015), and shows
-- refused fetches; never another user's grant or workflow.
-- ---------------------------------------------------------------------------
CREATE FUNCTION test.grant_id(p_token text) RETURNS uuid LANGUAGE sql SECURITY DEFINER AS $$
    SELECT id FROM otobot.grants WHERE token_hash = sha256(convert_to(p_token, 'UTF8'))
$$;
GRANT EXECUTE ON FUNCTION test.grant_id(text) TO PUBLIC;
SET ROLE otobot_api;
SELECT otobot.create_standing_grant('a0000000-0000-0000-0000-00000000000a', 'nightly report', '{google}',
    sha256(convert_to('grant-a-standing', 'UTF8')), now() + interval '30 days', 'portal', NULL);
SELECT otobot.mint_run_grant('a0000000-0000-0000-0000-00000000000a', 'drive-to-notion', NULL,
    sha256(convert_to('grant-a-run', 'UTF8')), 900, 'tooljet', NULL);
SELECT otobot.create_standing_grant('c0000000-0000-0000-0000-00000000000c', 'c secret workflow', '{google}',
    sha256(convert_to('grant-c', 'UTF8')), now() + interval '1 day', 'portal', NULL);
-- In order: a read with the standing grant, one with the run grant, C's grant
-- presented for A (refused), no grant (refused), then the standing grant
-- revoked and presented again (refused).
SELECT otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'google',
    sha256(convert_to('grant-a-standing', 'UTF8')), false, NULL, NULL, 'n8n', 'g-standing');
SELECT otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'google',
    sha256(convert_to('grant-a-run', 'UTF8')), false, NULL, NULL, 'n8n', 'g-run');
SELECT otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'google',
    sha256(convert_to('grant-c', 'UTF8')), false, NULL, NULL, 'n8n', 'g-other');
SELECT otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'google', NULL, false, NULL, NULL, 'n8n', 'g-none');
SELECT otobot.revoke_grant(test.grant_id('grant-a-standing'), 'a0000000-0000-0000-0000-00000000000a', 'portal', NULL);
SELECT otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'google',
    sha256(convert_to('grant-a-standing', 'UTF8')), false, NULL, NULL, 'n8n', 'g-revoked');
DO $$
DECLARE
    v        jsonb;
    e        jsonb;
    v_all    jsonb;
    standing text := test.grant_id('grant-a-standing')::text;
    run      text := test.grant_id('grant-a-run')::text;
    foreign_ text := test.grant_id('grant-c')::text;
BEGIN
    v := otobot.list_own_access_history('a0000000-0000-0000-0000-00000000000a', NULL, 6, true, NULL);
    e := v->'entries';
    ASSERT jsonb_array_length(e) = 6, v::text;
    -- Newest first: the refusal of the revoked grant names it and its workflow
    -- (from the grant: a refusal row does not carry the workflow).
    ASSERT e->0->>'requestId' = 'g-revoked' AND e->0->>'action' = 'credential_refused'
       AND e->0->>'refusal' = 'revoked' AND e->0->>'grantId' = standing
       AND e->0->>'grantKind' = 'standing' AND e->0->>'workflow' = 'nightly report'
       AND e->0->'trusted' = 'false', e->0;
    ASSERT e->1->>'requestId' = 'g-none' AND e->1->>'refusal' = 'grant_required'
       AND e->1->'grantId' = 'null' AND e->1->'workflow' = 'null', e->1;
    -- SECURITY: another user's grant presented for A: refused, and A learns
    -- neither its id nor its workflow.
    ASSERT e->2->>'requestId' = 'g-other' AND e->2->>'refusal' = 'other_user'
       AND e->2->'grantId' = 'null' AND e->2->'workflow' = 'null' AND NOT (e->2->'detail') ? 'grant_id', e->2;
    ASSERT NOT v::text LIKE '%' || foreign_ || '%' AND NOT v::text LIKE '%c secret workflow%',
        'nothing of C''s grant in A''s history';
    ASSERT e->3->>'requestId' = 'g-run' AND e->3->>'action' = 'credential_read' AND e->3->>'grantId' = run
       AND e->3->>'grantKind' = 'run' AND e->3->>'workflow' = 'drive-to-notion', e->3;
    ASSERT e->4->>'requestId' = 'g-standing' AND e->4->>'grantId' = standing
       AND e->4->>'grantKind' = 'standing' AND e->4->>'workflow' = 'nightly report' AND e->4->'trusted' = 'false', e->4;
    -- Reads by a trusted caller (the section above) say so, without a grant.
    ASSERT e->5->>'action' = 'credential_not_found' AND e->5->'trusted' = 'true' AND e->5->'grantId' = 'null', e->5;
    ASSERT NOT v::text LIKE '%tok-a%', 'no secret in the history';

    -- Everything: the grant's creation and revocation name it too.
    v_all := otobot.list_own_access_history('a0000000-0000-0000-0000-00000000000a', NULL, 100, false, NULL);
    ASSERT EXISTS (SELECT 1 FROM jsonb_array_elements(v_all->'entries') x
                   WHERE x->>'action' = 'grant_created' AND x->>'grantId' = standing
                     AND x->>'grantKind' = 'standing' AND x->>'workflow' = 'nightly report'), v_all;
    ASSERT EXISTS (SELECT 1 FROM jsonb_array_elements(v_all->'entries') x
                   WHERE x->>'action' = 'grant_revoked' AND x->>'grantId' = standing), v_all;

    -- SECURITY: C's history holds C's grant, none of A's reads.
    v := otobot.list_own_access_history('c0000000-0000-0000-0000-00000000000c', NULL, 100, false, NULL);
    ASSERT NOT v::text LIKE '%nightly report%' AND NOT v::text LIKE '%g-other%' AND NOT v::text LIKE '%' || standing || '%', v;
    ASSERT EXISTS (SELECT 1 FROM jsonb_array_elements(v->'entries') x
                   WHERE x->>'action' = 'grant_created' AND x->>'workflow' = 'c secret workflow'), v;
END $$;
RESET ROLE;
-- A grant id the log does not hold as a UUID joins nothing and breaks nothing
-- (the superuser writes such a row through the audit function, like a bug would).
DO $$ BEGIN
    PERFORM otobot.write_audit('credential_read', NULL, 'a0000000-0000-0000-0000-00000000000a', NULL, 'google',
                               '{"grant_id":"not-a-uuid"}');
END $$;
SET ROLE otobot_api;
DO $$
DECLARE v jsonb;
BEGIN
    v := otobot.list_own_access_history('a0000000-0000-0000-0000-00000000000a', NULL, 1, true, NULL);
    ASSERT v->'entries'->0->>'grantId' = 'not-a-uuid' AND v->'entries'->0->'workflow' = 'null', v;
END $$;
RESET ROLE;
