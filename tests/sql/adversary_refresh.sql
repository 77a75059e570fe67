-- As the API's own role (otobot_api) with the key loaded: try to obtain
-- refresh tokens without an audit row, with unbounded claims, and to take an
-- OAuth authorization without the browser that started it. Each attempt
-- fails, or succeeds only with its audit row.

-- Helpers (superuser-owned): audit rows seen from inside the API's
-- transaction, and a switch that makes one audit action fail to insert.
CREATE FUNCTION test.audit_rows(p_action text, p_connection_id uuid DEFAULT NULL, p_request_id text DEFAULT NULL)
RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = '' AS $$
    SELECT count(*) FROM otobot.credential_access_logs l
    WHERE l.action = p_action
      AND (p_connection_id IS NULL OR l.client_connection_id = p_connection_id)
      AND (p_request_id IS NULL OR l.request_id = p_request_id)
$$;
CREATE FUNCTION test.audit_source(p_action text) RETURNS text[] LANGUAGE sql SECURITY DEFINER SET search_path = '' AS $$
    SELECT pg_catalog.array_agg(DISTINCT l.source) FROM otobot.credential_access_logs l WHERE l.action = p_action
$$;
CREATE FUNCTION test.refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.action = current_setting('test.refuse_audit', true) THEN
        RAISE EXCEPTION 'test: audit insert refused' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER test_refuse_audit BEFORE INSERT ON otobot.credential_access_logs
    FOR EACH ROW EXECUTE FUNCTION test.refuse_audit();
CREATE FUNCTION test.expire_starts() RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = '' AS $$
    UPDATE otobot.oauth_starts SET expires_at = pg_catalog.now() - interval '1 second'
$$;
GRANT EXECUTE ON FUNCTION test.audit_rows(text, uuid, text), test.audit_source(text), test.expire_starts() TO otobot_api;

SELECT test.load_keys();
SET ROLE otobot_api;

-- ---------------------------------------------------------------------------
-- Claims beyond the bounds are refused, whatever the argument.
-- ---------------------------------------------------------------------------
SELECT test.expect_error($$SELECT otobot.claim_expiring(2000000000, 1000, 'attacker', 60)$$, '22023', '%window is 0 to 3600%');
SELECT test.expect_error($$SELECT otobot.claim_expiring(3601, 10, 'attacker', 60)$$, '22023', '%window%');
SELECT test.expect_error($$SELECT otobot.claim_expiring(-1, 10, 'attacker', 60)$$, '22023', '%window%');
SELECT test.expect_error($$SELECT otobot.claim_expiring(NULL, 10, 'attacker', 60)$$, '22023', '%window%');
SELECT test.expect_error($$SELECT otobot.claim_expiring(600, 1001, 'attacker', 60)$$, '22023', '%1 to 1000 connections%');
SELECT test.expect_error($$SELECT otobot.claim_expiring(600, 0, 'attacker', 60)$$, '22023', '%connections%');
SELECT test.expect_error($$SELECT otobot.claim_expiring(600, 10, 'attacker', 301)$$, '22023', '%5 to 300 seconds%');
SELECT test.expect_error($$SELECT otobot.claim_expiring(600, 10, 'attacker', 4)$$, '22023', '%lease%');
SELECT test.expect_error($$SELECT otobot.claim_expiring(600, 10, 'backoff', 60)$$, '22023', '%owner%');
SELECT test.expect_error($$SELECT otobot.claim_expiring(600, 10, repeat('a', 101), 60)$$, '22023', '%owner%');
SELECT test.expect_error($$SELECT otobot.claim_refresh(gen_random_uuid(), 'attacker', 60, 901, NULL)$$, '22023', '%margin is 0 to 900%');
SELECT test.expect_error($$SELECT otobot.claim_refresh(gen_random_uuid(), 'attacker', 60, NULL, NULL)$$, '22023', '%margin%');
SELECT test.expect_error($$SELECT otobot.claim_refresh(gen_random_uuid(), 'attacker', 2000000000, 60, NULL)$$, '22023', '%lease%');
-- The internal job builder and the DBA's reveal are not the API's.
SELECT test.expect_error($$SELECT otobot.refresh_job(gen_random_uuid())$$, '42501');
SELECT test.expect_error($$SELECT otobot.check_refresh_claim('a', 60, 60, 60, 1)$$, '42501');
SELECT test.expect_error($$SELECT otobot.reveal_credential(gen_random_uuid(), 'a long enough reason')$$, '42501');
SELECT test.expect_error($$SELECT * FROM otobot.refresh_leases$$, '42501');

-- ---------------------------------------------------------------------------
-- Every refresh token released comes with one audit row, same transaction.
-- ---------------------------------------------------------------------------
DO $$
DECLARE
    v_expired  uuid;  -- expired a minute ago
    v_soon     uuid;  -- expires in 5 minutes
    v_later    uuid;  -- expires in 2 hours: outside any allowed window
    v_d        uuid;
    v          jsonb;
    v_jobs     jsonb;
    b          record;
BEGIN
    SELECT * INTO b FROM otobot.refresh_bounds();
    ASSERT (b.max_window_seconds, b.max_margin_seconds, b.min_lease_seconds, b.max_lease_seconds, b.max_batch)
         = (3600, 900, 5, 300, 1000), 'the bounds the API settings mirror';

    v_expired := otobot.store_oauth_connection('a0000000-0000-0000-0000-00000000000a', 'google', 'at-expired', 'rt-expired',
        now() - interval '1 minute', '{}', 'a@x.test', NULL, 'tooljet', NULL);
    v_soon := otobot.store_oauth_connection('b0000000-0000-0000-0000-00000000000b', 'google', 'at-soon', 'rt-soon',
        now() + interval '5 minutes', '{}', 'b@x.test', NULL, 'tooljet', NULL);
    v_later := otobot.store_oauth_connection('c0000000-0000-0000-0000-00000000000c', 'google', 'at-later', 'rt-later',
        now() + interval '2 hours', '{}', 'c@x.test', NULL, 'tooljet', NULL);

    -- The widest claim allowed hands out only what expires within an hour, each audited.
    v_jobs := otobot.claim_expiring(3600, 1000, 'attacker', 5);
    ASSERT jsonb_array_length(v_jobs) = 2, v_jobs::text;
    ASSERT v_jobs::text NOT LIKE '%rt-later%', 'a token outside the window never leaves';
    ASSERT v_jobs::text LIKE '%rt-expired%' AND v_jobs::text LIKE '%rt-soon%';
    ASSERT test.audit_rows('refresh_token_read') = 2, 'one audit row per released refresh token';
    ASSERT test.audit_rows('refresh_token_read', v_expired) = 1 AND test.audit_rows('refresh_token_read', v_soon) = 1;
    ASSERT test.audit_source('refresh_token_read') = '{refresher}';
    -- Leased now: the same claim again gets nothing and writes nothing.
    ASSERT otobot.claim_expiring(3600, 1000, 'attacker', 5) = '[]'::jsonb;
    ASSERT test.audit_rows('refresh_token_read') = 2;

    -- Refresh on fetch: nothing for a token outside the margin.
    v := otobot.claim_refresh(v_later, 'attacker', 60, 900, 'req-adv-1');
    ASSERT v = '{"status":"fresh"}'::jsonb AND v::text NOT LIKE '%rt-later%', v::text;
    ASSERT otobot.claim_refresh(gen_random_uuid(), 'attacker', 60, 900, 'req-adv-1') = '{"status":"none"}'::jsonb;
    ASSERT test.audit_rows('refresh_token_read') = 2, 'no token, no row';

    -- An expiring one: released with its audit row and request id; then busy.
    v_d := otobot.store_oauth_connection('a0000000-0000-0000-0000-00000000000a', 'google', 'at-d', 'rt-d',
        now() + interval '10 seconds', '{}', 'd@x.test', 'd', 'tooljet', NULL);
    v := otobot.claim_refresh(v_d, 'attacker', 60, 60, 'req-adv-2');
    ASSERT v->>'status' = 'leased' AND v->>'refreshToken' = 'rt-d' AND (v->>'failures')::int = 0, v::text;
    ASSERT test.audit_rows('refresh_token_read', v_d, 'req-adv-2') = 1;
    v := otobot.claim_refresh(v_d, 'someone-else', 60, 60, 'req-adv-3');
    ASSERT v->>'status' = 'busy' AND v->>'refreshToken' IS NULL AND v ? 'leaseUntil', v::text;
    ASSERT test.audit_rows('refresh_token_read', v_d) = 1;

    -- Back-off is visible to the API role (it used to read 0 outside any scope).
    ASSERT otobot.refresh_failures(v_d) = 0;
    PERFORM otobot.fail_refresh(v_d, 'attacker', false, 'HTTP 503', 30, 'req-adv-2');
    ASSERT otobot.refresh_failures(v_d) = 1, 'refresh_failures sees the lease row';
    v := otobot.claim_refresh(v_d, 'attacker', 60, 60, 'req-adv-4');
    ASSERT v->>'status' = 'backoff' AND (v->>'failures')::int = 1 AND v->>'refreshToken' IS NULL, v::text;

    -- Revocation reads are audited as such.
    v := otobot.tokens_for_revocation(v_later, 'c0000000-0000-0000-0000-00000000000c', 'req-adv-5');
    ASSERT v->>'refreshToken' = 'rt-later';
    ASSERT test.audit_rows('credential_read', v_later, 'req-adv-5') = 1;
    -- Someone else's connection (another client's user as actor): nothing, unaudited.
    ASSERT otobot.tokens_for_revocation(v_soon, 'c0000000-0000-0000-0000-00000000000c', 'req-adv-6') IS NULL;
END
$$;

-- If the audit row cannot be written, no refresh token leaves at all.
DO $$
DECLARE
    v_e uuid;
    v_failed boolean := false;
    v jsonb;
BEGIN
    v_e := otobot.store_oauth_connection('b0000000-0000-0000-0000-00000000000b', 'google', 'at-e', 'rt-e',
        now() - interval '1 minute', '{}', 'e@x.test', 'e', 'tooljet', NULL);
    PERFORM set_config('test.refuse_audit', 'refresh_token_read', true);
    BEGIN
        v := otobot.claim_expiring(600, 10, 'attacker', 5);
    EXCEPTION WHEN check_violation THEN
        v_failed := true;
    END;
    ASSERT v_failed AND v IS NULL, 'claim_expiring fails as a whole: ' || COALESCE(v::text, '');
    BEGIN
        v := otobot.claim_refresh(v_e, 'attacker', 60, 60, NULL);
        v_failed := false;
    EXCEPTION WHEN check_violation THEN
        v_failed := true;
    END;
    ASSERT v_failed AND v IS NULL, 'claim_refresh fails as a whole';
    PERFORM set_config('test.refuse_audit', '', true);
    -- The failed claims left no lease: the connection is still claimable.
    v := otobot.claim_refresh(v_e, 'attacker', 60, 60, NULL);
    ASSERT v->>'refreshToken' = 'rt-e', v::text;
END
$$;

-- ---------------------------------------------------------------------------
-- OAuth states: the unbound functions are gone; a state is consumed only by
-- the browser that opened its start URL; a start URL works once.
-- ---------------------------------------------------------------------------
SELECT test.expect_error($$SELECT otobot.begin_oauth('a0000000-0000-0000-0000-00000000000a', 'google', sha256('s'), 'v', NULL, NULL, 600, NULL)$$, '42883');
SELECT test.expect_error($$SELECT otobot.consume_oauth_state(sha256('s'), NULL::text)$$, '42883');
SELECT test.expect_error($$SELECT * FROM otobot.oauth_states$$, '42501');
SELECT test.expect_error($$SELECT * FROM otobot.oauth_starts$$, '42501');
SELECT test.expect_error($$SELECT otobot.begin_oauth_start('a0000000-0000-0000-0000-00000000000a', 'google', sha256('x'), NULL, NULL, 601, NULL)$$, '22023', '%10 to 600 seconds%');
SELECT test.expect_error($$SELECT otobot.begin_oauth_start('a0000000-0000-0000-0000-00000000000a', 'openai', sha256('x'), NULL, NULL, 120, NULL)$$, '22023', '%does not use OAuth2%');
SELECT test.expect_error($$SELECT otobot.begin_oauth_start(gen_random_uuid(), 'google', sha256('x'), NULL, NULL, 120, NULL)$$, 'P0002');

DO $$
DECLARE
    v        jsonb;
    v_before bigint;
    v_verifier constant text := 'verifier-0123456789-0123456789-0123456789-abc';
BEGIN
    v_before := test.audit_rows('oauth_started');
    PERFORM otobot.begin_oauth_start('a0000000-0000-0000-0000-00000000000a', 'google', sha256('start-1'), 'work',
                                     'http://portal.example.test/x', 120, 'req-st-1');
    ASSERT test.audit_rows('oauth_started') = v_before + 1;
    -- A browser opens the start URL: the state is bound to its nonce.
    v := otobot.open_oauth_start(sha256('start-1'), sha256('state-1'), sha256('browser-1'), v_verifier, 600, NULL);
    ASSERT v->>'service' = 'google' AND v->>'redirectAfter' = 'http://portal.example.test/x' AND NOT (v->>'expired')::boolean, v::text;
    ASSERT v::text NOT LIKE '%verifier%';
    -- The start URL works once: the victim's browser gets nothing from it.
    ASSERT otobot.open_oauth_start(sha256('start-1'), sha256('state-x'), sha256('browser-2'), v_verifier, 600, NULL) IS NULL;

    -- The callback without the browser's nonce, or with another browser's:
    -- no user, no verifier; the state is spent; the rejection is audited.
    v := otobot.consume_oauth_state(sha256('state-1'), sha256('browser-2'), 'req-cb-1');
    ASSERT (v->>'browserMismatch')::boolean AND NOT v ? 'userId' AND NOT v ? 'codeVerifier', v::text;
    ASSERT test.audit_rows('oauth_rejected', NULL, 'req-cb-1') = 1;
    ASSERT otobot.consume_oauth_state(sha256('state-1'), sha256('browser-1'), NULL) IS NULL, 'spent, even for the right browser';

    PERFORM otobot.begin_oauth_start('a0000000-0000-0000-0000-00000000000a', 'google', sha256('start-2'), NULL, NULL, 120, NULL);
    PERFORM otobot.open_oauth_start(sha256('start-2'), sha256('state-2'), sha256('browser-1'), v_verifier, 600, NULL);
    v := otobot.consume_oauth_state(sha256('state-2'), NULL, 'req-cb-2');
    ASSERT (v->>'browserMismatch')::boolean AND NOT v ? 'codeVerifier', v::text;
    ASSERT test.audit_rows('oauth_rejected', NULL, 'req-cb-2') = 1;

    -- The browser that opened the start gets its authorization.
    PERFORM otobot.begin_oauth_start('a0000000-0000-0000-0000-00000000000a', 'google', sha256('start-3'), 'home', NULL, 120, NULL);
    PERFORM otobot.open_oauth_start(sha256('start-3'), sha256('state-3'), sha256('browser-1'), v_verifier, 600, NULL);
    v := otobot.consume_oauth_state(sha256('state-3'), sha256('browser-1'), NULL);
    ASSERT NOT (v->>'browserMismatch')::boolean AND v->>'userId' = 'a0000000-0000-0000-0000-00000000000a'
           AND v->>'codeVerifier' = v_verifier AND v->>'label' = 'home', v::text;
    ASSERT otobot.consume_oauth_state(sha256('state-3'), sha256('browser-1'), NULL) IS NULL, 'single use';

    -- A start URL expires.
    PERFORM otobot.begin_oauth_start('a0000000-0000-0000-0000-00000000000a', 'google', sha256('start-4'), NULL, NULL, 10, NULL);
    PERFORM test.expire_starts();
    v := otobot.open_oauth_start(sha256('start-4'), sha256('state-4'), sha256('browser-1'), v_verifier, 600, NULL);
    ASSERT (v->>'expired')::boolean, v::text;
    ASSERT otobot.consume_oauth_state(sha256('state-4'), sha256('browser-1'), NULL) IS NULL, 'no state from an expired start';
END
$$;
DO $$
DECLARE
    v_failed boolean := false;
BEGIN
    PERFORM otobot.begin_oauth_start('a0000000-0000-0000-0000-00000000000a', 'google', sha256('start-5'), NULL, NULL, 120, NULL);
    BEGIN
        PERFORM otobot.open_oauth_start(sha256('start-5'), sha256('state-5'), NULL, 'verifier-0123456789-0123456789-0123456789-abc', 600, NULL);
    EXCEPTION WHEN not_null_violation THEN
        v_failed := true;
    END;
    ASSERT v_failed, 'a state is never created without a browser';
END
$$;
RESET ROLE;
