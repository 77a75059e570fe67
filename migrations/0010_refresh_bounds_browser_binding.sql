-- ============================================================================
-- 0010 — refresh tokens leave only with an audit row, within bounds; back-off
-- visible to the API; OAuth states bound to the browser that started them.
--
-- Redefines (same signatures): otobot.refresh_job, otobot.claim_refresh,
-- otobot.claim_expiring, otobot.refresh_failures. Replaces the unbound
-- otobot.begin_oauth / otobot.consume_oauth_state(bytea, text) with a start
-- step (begin_oauth_start, open_oauth_start) and a browser-bound
-- consume_oauth_state(bytea, bytea, text).
-- ============================================================================
SET LOCAL ROLE otobot_owner;

-- ---------------------------------------------------------------------------
-- Bounds of every refresh claim, in one place. The API's settings accept
-- exactly these ranges (api/src/settings.rs REFRESH_*; a test compares them):
--   window  ≤ 3600 s: the background refresher renews at most an hour ahead.
--           Common access tokens live about an hour; a wider window would
--           make every token permanently due, and the largest refresher
--           interval (3600 s) is still covered.
--   margin  ≤  900 s: a fetch refreshes first only a token with at most
--           15 minutes left (default 60 s).
--   lease   5–300 s: longer than any provider call (HTTP timeout
--           min(15, lease − 2) s); a crashed holder blocks a connection's
--           refresh for at most five minutes.
--   batch   1–1000 connections per claim (the refresher asks for 100).
-- ---------------------------------------------------------------------------
CREATE FUNCTION otobot.refresh_bounds(OUT max_window_seconds integer, OUT max_margin_seconds integer,
                                      OUT min_lease_seconds integer, OUT max_lease_seconds integer,
                                      OUT max_batch integer)
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT 3600, 900, 5, 300, 1000
$$;
COMMENT ON FUNCTION otobot.refresh_bounds() IS
    'The limits of every refresh claim (window, margin, lease, batch); the API''s settings accept the same ranges.';

-- Raises 22023 naming the bound; NULL arguments are not checked (not used by the caller).
CREATE FUNCTION otobot.check_refresh_claim(p_owner text, p_lease_seconds integer, p_margin_seconds integer,
                                           p_window_seconds integer, p_limit integer)
    RETURNS void
    LANGUAGE plpgsql STABLE
AS $$
DECLARE
    b record;
BEGIN
    SELECT * INTO b FROM otobot.refresh_bounds();
    -- SECURITY: 'backoff' marks a back-off, not a holder; owners are process names.
    IF p_owner IS NULL OR p_owner !~ '^[a-z0-9][a-z0-9._-]{0,99}$' OR p_owner = 'backoff' THEN
        RAISE EXCEPTION 'otobot: a lease owner is 1 to 100 characters of a-z 0-9 . _ - (not "backoff")'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_lease_seconds IS NULL OR p_lease_seconds NOT BETWEEN b.min_lease_seconds AND b.max_lease_seconds THEN
        RAISE EXCEPTION 'otobot: a refresh lease lasts % to % seconds', b.min_lease_seconds, b.max_lease_seconds
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_margin_seconds IS NOT NULL AND p_margin_seconds NOT BETWEEN 0 AND b.max_margin_seconds THEN
        RAISE EXCEPTION 'otobot: the refresh margin is 0 to % seconds', b.max_margin_seconds
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_window_seconds IS NOT NULL AND p_window_seconds NOT BETWEEN 0 AND b.max_window_seconds THEN
        RAISE EXCEPTION 'otobot: the refresh window is 0 to % seconds', b.max_window_seconds
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_limit IS NOT NULL AND p_limit NOT BETWEEN 1 AND b.max_batch THEN
        RAISE EXCEPTION 'otobot: a refresh claim takes 1 to % connections', b.max_batch
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;
COMMENT ON FUNCTION otobot.check_refresh_claim(text, integer, integer, integer, integer) IS
    'Refuses (22023) a claim whose owner, lease, margin, window or batch is outside otobot.refresh_bounds().';

-- ---------------------------------------------------------------------------
-- The only way a decrypted refresh token leaves: one audit row per
-- connection, in the caller's transaction, with the caller's source and
-- request id (begin_scope of claim_refresh / claim_expiring).
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION otobot.refresh_job(p_connection_id uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    c       record;
    v_token text;
BEGIN
    SELECT cc.id, cc.user_id, cc.client_id, s.service_code, cc.token_expires_at, cc.scopes,
           cc.encrypted_refresh_token, COALESCE(l.failures, 0) AS failures
    INTO c
    FROM otobot.client_connections cc
    JOIN otobot.services s ON s.id = cc.service_id
    LEFT JOIN otobot.refresh_leases l ON l.connection_id = cc.id
    WHERE cc.id = p_connection_id AND cc.encrypted_refresh_token IS NOT NULL;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    v_token := otobot.try_decrypt(c.encrypted_refresh_token, c.id::text || ':encrypted_refresh_token');
    IF v_token IS NULL THEN
        -- One bad value never blocks a whole batch; the failure is recorded.
        PERFORM otobot.write_audit('decrypt_failed', c.id, c.user_id, c.client_id, c.service_code,
                                   '{"column":"encrypted_refresh_token"}');
        RETURN NULL;
    END IF;
    -- SECURITY: same transaction as the release: no audit row, no token.
    PERFORM otobot.write_audit('refresh_token_read', c.id, c.user_id, c.client_id, c.service_code,
                               '{"purpose":"refresh"}');
    RETURN pg_catalog.jsonb_build_object(
        'connectionId', c.id, 'userId', c.user_id, 'service', c.service_code,
        'expiresAt', c.token_expires_at, 'scopes', pg_catalog.to_jsonb(c.scopes),
        'failures', c.failures, 'refreshToken', v_token);
END
$$;
COMMENT ON FUNCTION otobot.refresh_job(uuid) IS
    'What a lease holder needs to refresh one connection; audits the refresh token''s release (refresh_token_read).';

-- Refresh on fetch: take one connection's lease. Returns the job (with
-- "status":"leased") or why not: "none" (not refreshable), "fresh" (no
-- longer within the margin: a refresh just committed), "recent" (refreshed
-- less than half a margin ago and still valid: a token that lives no longer
-- than the margin is not renewed on every fetch), "busy" (another holder,
-- with leaseUntil) or "backoff" (after transient failures, with leaseUntil
-- and failures).
CREATE OR REPLACE FUNCTION otobot.claim_refresh(p_connection_id uuid, p_owner text, p_lease_seconds integer,
                                                p_margin_seconds integer, p_request_id text)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    c record;
    l record;
BEGIN
    PERFORM otobot.check_refresh_claim(p_owner, p_lease_seconds, COALESCE(p_margin_seconds, -1), NULL, NULL);
    PERFORM otobot.begin_scope('system', NULL, NULL, 'refresher', p_request_id);
    SELECT cc.token_expires_at, cc.last_refreshed_at INTO c
    FROM otobot.client_connections cc
    WHERE cc.id = p_connection_id AND cc.is_active AND cc.status = 'active'
      AND cc.credential_type = 'oauth2' AND cc.encrypted_refresh_token IS NOT NULL
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN '{"status":"none"}';
    END IF;
    -- Re-checked under the row lock: a refresh that just committed wins.
    IF c.token_expires_at IS NULL
       OR c.token_expires_at > pg_catalog.now() + pg_catalog.make_interval(secs => p_margin_seconds) THEN
        RETURN '{"status":"fresh"}';
    END IF;
    IF c.token_expires_at > pg_catalog.now()
       AND c.last_refreshed_at > pg_catalog.now() - pg_catalog.make_interval(secs => p_margin_seconds / 2.0) THEN
        RETURN '{"status":"recent"}';
    END IF;
    INSERT INTO otobot.refresh_leases AS rl (connection_id, owner, lease_until)
    VALUES (p_connection_id, p_owner, pg_catalog.now() + pg_catalog.make_interval(secs => p_lease_seconds))
    ON CONFLICT (connection_id) DO UPDATE
    SET owner = EXCLUDED.owner, lease_until = EXCLUDED.lease_until
    WHERE rl.lease_until < pg_catalog.now();
    IF NOT FOUND THEN
        SELECT rl.owner, rl.lease_until, rl.failures INTO l
        FROM otobot.refresh_leases rl WHERE rl.connection_id = p_connection_id;
        RETURN pg_catalog.jsonb_build_object(
            'status', CASE WHEN l.owner = 'backoff' THEN 'backoff' ELSE 'busy' END,
            'leaseUntil', l.lease_until, 'failures', l.failures);
    END IF;
    RETURN otobot.refresh_job(p_connection_id) || '{"status":"leased"}';
END
$$;
COMMENT ON FUNCTION otobot.claim_refresh(uuid, text, integer, integer, text) IS
    'Leases one connection for refreshing within bounds and returns its refresh token (audited), or why not (status).';

-- The refresher: lease up to p_limit connections expiring within the window.
CREATE OR REPLACE FUNCTION otobot.claim_expiring(p_window_seconds integer, p_limit integer, p_owner text,
                                                 p_lease_seconds integer)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_ids  uuid[];
    v_id   uuid;
    v_job  jsonb;
    v_jobs jsonb := '[]';
BEGIN
    PERFORM otobot.check_refresh_claim(p_owner, p_lease_seconds, NULL, COALESCE(p_window_seconds, -1),
                                       COALESCE(p_limit, 0));
    PERFORM otobot.begin_scope('system', NULL, NULL, 'refresher', NULL);
    SELECT pg_catalog.array_agg(c.id) INTO v_ids
    FROM (SELECT c.id
          FROM otobot.client_connections c
          LEFT JOIN otobot.refresh_leases l ON l.connection_id = c.id
          WHERE c.is_active AND c.status = 'active' AND c.credential_type = 'oauth2'
            AND c.encrypted_refresh_token IS NOT NULL
            AND c.token_expires_at < pg_catalog.now() + pg_catalog.make_interval(secs => p_window_seconds)
            -- A token that lives less than the window is not renewed again
            -- within half a window, unless it has already expired.
            AND (c.last_refreshed_at IS NULL
                 OR c.last_refreshed_at < pg_catalog.now() - pg_catalog.make_interval(secs => p_window_seconds / 2)
                 OR c.token_expires_at <= pg_catalog.now())
            AND (l.lease_until IS NULL OR l.lease_until < pg_catalog.now())
          ORDER BY c.token_expires_at
          LIMIT p_limit
          FOR UPDATE OF c SKIP LOCKED) c;
    IF v_ids IS NULL THEN
        RETURN '[]'::jsonb;
    END IF;
    INSERT INTO otobot.refresh_leases AS l (connection_id, owner, lease_until)
    SELECT id, p_owner, pg_catalog.now() + pg_catalog.make_interval(secs => p_lease_seconds)
    FROM pg_catalog.unnest(v_ids) id
    ON CONFLICT (connection_id) DO UPDATE
    SET owner = EXCLUDED.owner, lease_until = EXCLUDED.lease_until
    WHERE l.lease_until < pg_catalog.now();
    -- Re-read after claiming: only what this owner now holds (each release audited).
    FOR v_id IN SELECT l.connection_id FROM otobot.refresh_leases l
                WHERE l.connection_id = ANY (v_ids) AND l.owner = p_owner AND l.lease_until > pg_catalog.now() LOOP
        v_job := otobot.refresh_job(v_id);
        IF v_job IS NOT NULL THEN
            v_jobs := v_jobs || pg_catalog.jsonb_build_array(v_job);
        END IF;
    END LOOP;
    RETURN v_jobs;
END
$$;
COMMENT ON FUNCTION otobot.claim_expiring(integer, integer, text, integer) IS
    'Leases connections that expire within the window (bounded; FOR UPDATE SKIP LOCKED); each refresh token released is audited.';

-- In the system scope: the lease row is invisible to any other.
CREATE OR REPLACE FUNCTION otobot.refresh_failures(p_connection_id uuid) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    PERFORM otobot.begin_scope('system', NULL, NULL, 'refresher', NULL);
    RETURN COALESCE((SELECT l.failures FROM otobot.refresh_leases l WHERE l.connection_id = p_connection_id), 0);
END
$$;
COMMENT ON FUNCTION otobot.refresh_failures(uuid) IS 'Consecutive transient refresh failures of a connection.';

-- ---------------------------------------------------------------------------
-- OAuth states bound to the browser.
--
-- POST …/authorize records a start (begin_oauth_start): a random start
-- token, stored hashed, single use, short-lived, bound to the user. The
-- browser that opens the start URL (open_oauth_start) gets a random browser
-- nonce in a cookie; the state the provider will carry back is created then,
-- with the nonce's SHA-256. The callback (consume_oauth_state) hands out the
-- PKCE verifier and the user only to the browser that presents that nonce.
-- ---------------------------------------------------------------------------
CREATE TABLE otobot.oauth_starts (
    start_hash     bytea PRIMARY KEY CHECK (pg_catalog.octet_length(start_hash) = 32),
    user_id        uuid NOT NULL,
    client_id      uuid NOT NULL,
    service_code   text NOT NULL,
    label          text,
    redirect_after text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL
);
CREATE INDEX oauth_starts_expires_idx ON otobot.oauth_starts (expires_at);
COMMENT ON TABLE otobot.oauth_starts IS
    'Pending OAuth2 start URLs: single use, short-lived, stored hashed, bound to the user who asked.';
ALTER TABLE otobot.oauth_starts ENABLE ROW LEVEL SECURITY;
ALTER TABLE otobot.oauth_starts FORCE ROW LEVEL SECURITY;
CREATE POLICY oauth_starts_system ON otobot.oauth_starts TO otobot_owner
    USING (otobot.scope_kind() = 'system') WITH CHECK (otobot.scope_kind() = 'system');
REVOKE ALL ON otobot.oauth_starts FROM PUBLIC;

-- States pending when this migration runs have no browser: they are dropped
-- (ten minutes at most; those users start again). TRUNCATE needs no scope.
TRUNCATE otobot.oauth_states;
ALTER TABLE otobot.oauth_states
    ADD COLUMN browser_hash bytea NOT NULL CHECK (pg_catalog.octet_length(browser_hash) = 32);
COMMENT ON COLUMN otobot.oauth_states.browser_hash IS
    'SHA-256 of the browser nonce (cookie) set by the start URL; the callback must present the nonce.';

DROP FUNCTION otobot.begin_oauth(uuid, text, bytea, text, text, text, integer, text);
DROP FUNCTION otobot.consume_oauth_state(bytea, text);

CREATE FUNCTION otobot.begin_oauth_start(p_user_id uuid, p_service_code text, p_start_hash bytea,
                                         p_label text, p_redirect_after text, p_ttl_seconds integer,
                                         p_request_id text)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_actor record;
BEGIN
    PERFORM otobot.check_text(p_label, 'label', 100);
    PERFORM otobot.check_text(p_redirect_after, 'redirectAfter', 2000);
    IF p_ttl_seconds IS NULL OR p_ttl_seconds NOT BETWEEN 10 AND 600 THEN
        RAISE EXCEPTION 'otobot: a start URL lives 10 to 600 seconds' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_actor := otobot.begin_actor(p_user_id, 'tooljet', p_request_id);
    IF NOT EXISTS (SELECT 1 FROM otobot.services s
                   WHERE s.service_code = p_service_code AND s.is_active AND s.auth_type = 'oauth2') THEN
        RAISE EXCEPTION 'otobot: service % does not use OAuth2', p_service_code USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM otobot.begin_scope('system', NULL, NULL, 'tooljet', p_request_id);
    DELETE FROM otobot.oauth_starts WHERE expires_at < pg_catalog.now() - interval '1 hour';
    INSERT INTO otobot.oauth_starts (start_hash, user_id, client_id, service_code, label, redirect_after, expires_at)
    VALUES (p_start_hash, p_user_id, v_actor.client_id, p_service_code, p_label, p_redirect_after,
            pg_catalog.now() + pg_catalog.make_interval(secs => p_ttl_seconds));
    PERFORM otobot.write_audit('oauth_started', NULL, p_user_id, v_actor.client_id, p_service_code,
                               pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('label', p_label)));
END
$$;
COMMENT ON FUNCTION otobot.begin_oauth_start(uuid, text, bytea, text, text, integer, text) IS
    'Records a single-use, short-lived OAuth2 start (hashed) for an active user; audited (oauth_started).';

-- Opens a start (single use: it is deleted): the state is created, bound to
-- the browser nonce's hash, with the PKCE verifier encrypted. NULL when
-- unknown or already used; {"expired":true} when too old.
CREATE FUNCTION otobot.open_oauth_start(p_start_hash bytea, p_state_hash bytea, p_browser_hash bytea,
                                        p_code_verifier text, p_ttl_seconds integer, p_request_id text)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    s otobot.oauth_starts;
BEGIN
    IF p_ttl_seconds IS NULL OR p_ttl_seconds NOT BETWEEN 30 AND 3600 THEN
        RAISE EXCEPTION 'otobot: state lifetime must be 30 to 3600 seconds' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM otobot.check_text(p_code_verifier, 'the code verifier', 128);
    PERFORM otobot.begin_scope('system', NULL, NULL, 'oauth', p_request_id);
    DELETE FROM otobot.oauth_starts WHERE start_hash = p_start_hash RETURNING * INTO s;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF s.expires_at < pg_catalog.now() THEN
        RETURN pg_catalog.jsonb_build_object('expired', true, 'service', s.service_code);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM otobot.users u JOIN otobot.clients c ON c.id = u.client_id
                   WHERE u.id = s.user_id AND u.is_active AND c.is_active) THEN
        RETURN NULL;
    END IF;
    DELETE FROM otobot.oauth_states WHERE expires_at < pg_catalog.now() - interval '1 hour';
    INSERT INTO otobot.oauth_states (state_hash, user_id, client_id, service_code, label, redirect_after,
                                     code_verifier, expires_at, browser_hash)
    VALUES (p_state_hash, s.user_id, s.client_id, s.service_code, s.label, s.redirect_after,
            otobot.otobot_encrypt(p_code_verifier, 'oauth_state:' || pg_catalog.encode(p_state_hash, 'hex')),
            pg_catalog.now() + pg_catalog.make_interval(secs => p_ttl_seconds), p_browser_hash);
    RETURN pg_catalog.jsonb_build_object('expired', false, 'service', s.service_code,
                                         'redirectAfter', s.redirect_after);
END
$$;
COMMENT ON FUNCTION otobot.open_oauth_start(bytea, bytea, bytea, text, integer, text) IS
    'Consumes a start URL (single use, expiring) and creates the browser-bound state with its encrypted PKCE verifier.';

-- Takes a state (single use: deleted whatever the outcome). Only the browser
-- that opened the start gets the user and the verifier; any other (no
-- cookie, another browser's cookie) gets {"browserMismatch":true}, audited
-- as oauth_rejected. NULL when unknown or replayed.
CREATE FUNCTION otobot.consume_oauth_state(p_state_hash bytea, p_browser_hash bytea, p_request_id text)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    s otobot.oauth_states;
BEGIN
    PERFORM otobot.begin_scope('system', NULL, NULL, 'oauth', p_request_id);
    DELETE FROM otobot.oauth_states WHERE state_hash = p_state_hash RETURNING * INTO s;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF s.expires_at < pg_catalog.now() THEN
        RETURN pg_catalog.jsonb_build_object('expired', true, 'service', s.service_code);
    END IF;
    -- SECURITY: the state alone is not enough; the nonce of the browser that
    -- opened the start URL must come back with it (hashes of 256-bit random
    -- values: comparing them leaks nothing useful).
    IF p_browser_hash IS NULL OR p_browser_hash <> s.browser_hash THEN
        PERFORM otobot.write_audit('oauth_rejected', NULL, s.user_id, s.client_id, s.service_code,
                                   pg_catalog.jsonb_build_object('reason',
                                       CASE WHEN p_browser_hash IS NULL THEN 'browser_cookie_missing'
                                            ELSE 'browser_mismatch' END));
        RETURN pg_catalog.jsonb_build_object('expired', false, 'browserMismatch', true, 'service', s.service_code);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM otobot.users u WHERE u.id = s.user_id AND u.is_active) THEN
        RETURN NULL;
    END IF;
    RETURN pg_catalog.jsonb_build_object(
        'expired', false, 'browserMismatch', false, 'userId', s.user_id, 'clientId', s.client_id,
        'service', s.service_code, 'label', s.label, 'redirectAfter', s.redirect_after,
        'codeVerifier', otobot.otobot_decrypt(s.code_verifier, 'oauth_state:' || pg_catalog.encode(p_state_hash, 'hex')));
END
$$;
COMMENT ON FUNCTION otobot.consume_oauth_state(bytea, bytea, text) IS
    'Consumes a pending authorization (single use) for the browser that started it; NULL when unknown or replayed.';

-- ---------------------------------------------------------------------------
-- Privileges
-- ---------------------------------------------------------------------------
REVOKE EXECUTE ON FUNCTION
    otobot.refresh_bounds(),
    otobot.check_refresh_claim(text, integer, integer, integer, integer),
    otobot.refresh_job(uuid),
    otobot.claim_refresh(uuid, text, integer, integer, text),
    otobot.claim_expiring(integer, integer, text, integer),
    otobot.refresh_failures(uuid),
    otobot.begin_oauth_start(uuid, text, bytea, text, text, integer, text),
    otobot.open_oauth_start(bytea, bytea, bytea, text, integer, text),
    otobot.consume_oauth_state(bytea, bytea, text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION otobot.refresh_bounds() TO otobot_api, otobot_auditor, otobot_dba;
GRANT EXECUTE ON FUNCTION
    otobot.claim_refresh(uuid, text, integer, integer, text),
    otobot.claim_expiring(integer, integer, text, integer),
    otobot.refresh_failures(uuid),
    otobot.begin_oauth_start(uuid, text, bytea, text, text, integer, text),
    otobot.open_oauth_start(bytea, bytea, bytea, text, integer, text),
    otobot.consume_oauth_state(bytea, bytea, text)
TO otobot_api;
