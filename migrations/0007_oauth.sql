-- ============================================================================
-- 0007 — OAuth2: the service catalogue sync, authorization states, refresh
-- leases (one refresh per connection at a time, across processes), revocation
-- on disconnect. (Refresh on fetch is otobot.get_user_credentials's margin.)
-- ============================================================================
SET LOCAL ROLE otobot_owner;

-- ---------------------------------------------------------------------------
-- Catalogue sync: api/providers.toml is the source of truth
-- ---------------------------------------------------------------------------
CREATE FUNCTION otobot.sync_services(p_services jsonb) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    s jsonb;
    n integer := 0;
BEGIN
    IF pg_catalog.jsonb_typeof(p_services) <> 'array' OR pg_catalog.jsonb_array_length(p_services) = 0 THEN
        RAISE EXCEPTION 'otobot: the catalogue must be a non-empty array' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR s IN SELECT * FROM pg_catalog.jsonb_array_elements(p_services) LOOP
        INSERT INTO otobot.services AS t (service_code, display_name, auth_type, accepts_api_key, config, is_active)
        VALUES (s->>'code', s->>'displayName', s->>'authType', (s->>'acceptsApiKey')::boolean,
                COALESCE(s->'config', '{}'), true)
        ON CONFLICT (service_code) DO UPDATE
        SET display_name = EXCLUDED.display_name, auth_type = EXCLUDED.auth_type,
            accepts_api_key = EXCLUDED.accepts_api_key, config = EXCLUDED.config, is_active = true
        WHERE (t.display_name, t.auth_type, t.accepts_api_key, t.config, t.is_active)
              IS DISTINCT FROM (EXCLUDED.display_name, EXCLUDED.auth_type, EXCLUDED.accepts_api_key, EXCLUDED.config, true);
        n := n + 1;
    END LOOP;
    -- A service that left the catalogue can no longer be connected; its
    -- existing connections stay readable.
    UPDATE otobot.services SET is_active = false
    WHERE is_active AND service_code NOT IN (SELECT e->>'code' FROM pg_catalog.jsonb_array_elements(p_services) e);
    RETURN n;
END
$$;
COMMENT ON FUNCTION otobot.sync_services(jsonb) IS
    'Makes otobot.services match the provider catalogue (insert, update, deactivate the absent).';

-- ---------------------------------------------------------------------------
-- Authorization states: random, stored as a SHA-256 digest, bound to the
-- user, the service and the PKCE verifier (encrypted), single-use, expiring.
-- ---------------------------------------------------------------------------
CREATE TABLE otobot.oauth_states (
    state_hash     bytea PRIMARY KEY CHECK (pg_catalog.octet_length(state_hash) = 32),
    user_id        uuid NOT NULL,
    client_id      uuid NOT NULL,
    service_code   text NOT NULL,
    label          text,
    redirect_after text,
    -- version:iv:tag:ciphertext, AAD 'oauth_state:<state_hash hex>'
    code_verifier  text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL
);
CREATE INDEX oauth_states_expires_idx ON otobot.oauth_states (expires_at);
COMMENT ON TABLE otobot.oauth_states IS
    'Pending OAuth2 authorizations: single-use states (stored hashed) with their encrypted PKCE verifier.';
ALTER TABLE otobot.oauth_states ENABLE ROW LEVEL SECURITY;
ALTER TABLE otobot.oauth_states FORCE ROW LEVEL SECURITY;
CREATE POLICY oauth_states_system ON otobot.oauth_states TO otobot_owner
    USING (otobot.scope_kind() = 'system') WITH CHECK (otobot.scope_kind() = 'system');
REVOKE ALL ON otobot.oauth_states FROM PUBLIC;

CREATE FUNCTION otobot.begin_oauth(p_user_id uuid, p_service_code text, p_state_hash bytea, p_code_verifier text,
                                   p_label text, p_redirect_after text, p_ttl_seconds integer, p_request_id text)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_actor record;
BEGIN
    PERFORM otobot.check_text(p_label, 'label', 100);
    PERFORM otobot.check_text(p_redirect_after, 'redirectAfter', 2000);
    IF p_ttl_seconds IS NULL OR p_ttl_seconds NOT BETWEEN 30 AND 3600 THEN
        RAISE EXCEPTION 'otobot: state lifetime must be 30 to 3600 seconds' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_actor := otobot.begin_actor(p_user_id, 'tooljet', p_request_id);
    IF NOT EXISTS (SELECT 1 FROM otobot.services s
                   WHERE s.service_code = p_service_code AND s.is_active AND s.auth_type = 'oauth2') THEN
        RAISE EXCEPTION 'otobot: service % does not use OAuth2', p_service_code USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_catalog.set_config('otobot.scope', 'system', true);
    DELETE FROM otobot.oauth_states WHERE expires_at < pg_catalog.now() - interval '1 hour';
    INSERT INTO otobot.oauth_states (state_hash, user_id, client_id, service_code, label, redirect_after,
                                     code_verifier, expires_at)
    VALUES (p_state_hash, p_user_id, v_actor.client_id, p_service_code, p_label, p_redirect_after,
            otobot.otobot_encrypt(p_code_verifier, 'oauth_state:' || pg_catalog.encode(p_state_hash, 'hex')),
            pg_catalog.now() + pg_catalog.make_interval(secs => p_ttl_seconds));
    PERFORM otobot.write_audit('oauth_started', NULL, p_user_id, v_actor.client_id, p_service_code,
                               pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('label', p_label)));
END
$$;
COMMENT ON FUNCTION otobot.begin_oauth(uuid, text, bytea, text, text, text, integer, text) IS
    'Records a pending OAuth2 authorization for an active user (state hashed, PKCE verifier encrypted).';

-- Takes a state (single use: it is deleted), or NULL when unknown.
CREATE FUNCTION otobot.consume_oauth_state(p_state_hash bytea, p_request_id text) RETURNS jsonb
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
    IF NOT EXISTS (SELECT 1 FROM otobot.users u WHERE u.id = s.user_id AND u.is_active) THEN
        RETURN NULL;
    END IF;
    RETURN pg_catalog.jsonb_build_object(
        'expired', false, 'userId', s.user_id, 'clientId', s.client_id, 'service', s.service_code,
        'label', s.label, 'redirectAfter', s.redirect_after,
        'codeVerifier', otobot.otobot_decrypt(s.code_verifier, 'oauth_state:' || pg_catalog.encode(p_state_hash, 'hex')));
END
$$;
COMMENT ON FUNCTION otobot.consume_oauth_state(bytea, text) IS
    'Consumes a pending authorization (single use); NULL when unknown or replayed.';

-- ---------------------------------------------------------------------------
-- Refresh leases: whoever holds a connection's lease is the only one to
-- call the provider with its refresh token. A lease outlives the HTTP call's
-- timeout and is never a transaction or a lock held across it; a crashed
-- holder's lease simply expires.
-- ---------------------------------------------------------------------------
CREATE TABLE otobot.refresh_leases (
    connection_id uuid PRIMARY KEY REFERENCES otobot.client_connections (id),
    owner         text NOT NULL,
    lease_until   timestamptz NOT NULL,
    failures      integer NOT NULL DEFAULT 0,
    last_error    text
);
COMMENT ON TABLE otobot.refresh_leases IS
    'Who may refresh a connection until when (also the back-off after transient failures).';
ALTER TABLE otobot.refresh_leases ENABLE ROW LEVEL SECURITY;
ALTER TABLE otobot.refresh_leases FORCE ROW LEVEL SECURITY;
CREATE POLICY refresh_leases_system ON otobot.refresh_leases TO otobot_owner
    USING (otobot.scope_kind() = 'system') WITH CHECK (otobot.scope_kind() = 'system');
CREATE POLICY refresh_leases_auditor ON otobot.refresh_leases FOR SELECT TO otobot_auditor USING (true);
REVOKE ALL ON otobot.refresh_leases FROM PUBLIC;
GRANT SELECT ON otobot.refresh_leases TO otobot_auditor;

-- The decrypted refresh token of one leased connection, as JSON.
CREATE FUNCTION otobot.refresh_job(p_connection_id uuid) RETURNS jsonb
    LANGUAGE sql VOLATILE
AS $$
    SELECT pg_catalog.jsonb_build_object(
        'connectionId', c.id, 'userId', c.user_id, 'service', s.service_code,
        'expiresAt', c.token_expires_at, 'scopes', pg_catalog.to_jsonb(c.scopes),
        'refreshToken', otobot.otobot_decrypt(c.encrypted_refresh_token, c.id::text || ':encrypted_refresh_token'))
    FROM otobot.client_connections c JOIN otobot.services s ON s.id = c.service_id
    WHERE c.id = p_connection_id
$$;
COMMENT ON FUNCTION otobot.refresh_job(uuid) IS 'What a lease holder needs to refresh one connection.';

-- Take the lease of one connection (refresh on fetch): NULL when another
-- process holds it, or the token no longer expires within the margin (the
-- row lock makes a just-finished refresh visible), or it cannot be refreshed.
CREATE FUNCTION otobot.claim_refresh(p_connection_id uuid, p_owner text, p_lease_seconds integer,
                                     p_margin_seconds integer, p_request_id text)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    PERFORM otobot.begin_scope('system', NULL, NULL, 'refresher', p_request_id);
    PERFORM 1 FROM otobot.client_connections c
    WHERE c.id = p_connection_id AND c.is_active AND c.status = 'active'
      AND c.credential_type = 'oauth2' AND c.encrypted_refresh_token IS NOT NULL
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- Re-checked under the row lock: a refresh that just committed wins.
    PERFORM 1 FROM otobot.client_connections c
    WHERE c.id = p_connection_id
      AND (c.token_expires_at IS NULL
           OR c.token_expires_at > pg_catalog.now() + pg_catalog.make_interval(secs => p_margin_seconds));
    IF FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO otobot.refresh_leases AS l (connection_id, owner, lease_until)
    VALUES (p_connection_id, p_owner, pg_catalog.now() + pg_catalog.make_interval(secs => p_lease_seconds))
    ON CONFLICT (connection_id) DO UPDATE
    SET owner = EXCLUDED.owner, lease_until = EXCLUDED.lease_until
    WHERE l.lease_until < pg_catalog.now();
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN otobot.refresh_job(p_connection_id);
END
$$;
COMMENT ON FUNCTION otobot.claim_refresh(uuid, text, integer, integer, text) IS
    'Leases one connection for refreshing and returns its refresh token; NULL when someone else holds it.';

-- The refresher: lease up to p_limit connections expiring within the window.
CREATE FUNCTION otobot.claim_expiring(p_window_seconds integer, p_limit integer, p_owner text, p_lease_seconds integer)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_ids uuid[];
BEGIN
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
    SELECT id, p_owner, pg_catalog.now() + pg_catalog.make_interval(secs => p_lease_seconds) FROM pg_catalog.unnest(v_ids) id
    ON CONFLICT (connection_id) DO UPDATE
    SET owner = EXCLUDED.owner, lease_until = EXCLUDED.lease_until
    WHERE l.lease_until < pg_catalog.now();
    -- Re-read after claiming: only what this owner now holds.
    RETURN COALESCE((SELECT pg_catalog.jsonb_agg(otobot.refresh_job(l.connection_id))
                     FROM otobot.refresh_leases l
                     WHERE l.connection_id = ANY (v_ids) AND l.owner = p_owner
                       AND l.lease_until > pg_catalog.now()), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION otobot.claim_expiring(integer, integer, text, integer) IS
    'Leases connections that expire within the window (FOR UPDATE SKIP LOCKED, short transaction).';

CREATE FUNCTION otobot.complete_refresh(p_connection_id uuid, p_owner text, p_access_token text, p_refresh_token text,
                                        p_expires_at timestamptz, p_scopes text[], p_request_id text)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    PERFORM otobot.begin_scope('system', NULL, NULL, 'refresher', p_request_id);
    PERFORM otobot.check_text(p_access_token, 'the access token', 65536);
    PERFORM otobot.check_text(p_refresh_token, 'the refresh token', 65536);
    -- Lock order as in the claims: the connection row, then its lease.
    PERFORM 1 FROM otobot.client_connections WHERE id = p_connection_id FOR NO KEY UPDATE;
    DELETE FROM otobot.refresh_leases WHERE connection_id = p_connection_id AND owner = p_owner;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pg_catalog.set_config('otobot.token_change', 'tokens_refreshed', true);
    UPDATE otobot.client_connections c
    SET encrypted_access_token  = otobot.otobot_encrypt(p_access_token, c.id::text || ':encrypted_access_token'),
        -- A response without a refresh token keeps the stored one; a rotated one replaces it.
        encrypted_refresh_token = CASE WHEN p_refresh_token IS NULL THEN c.encrypted_refresh_token
            ELSE otobot.otobot_encrypt(p_refresh_token, c.id::text || ':encrypted_refresh_token') END,
        token_expires_at        = p_expires_at,
        scopes                  = COALESCE(p_scopes, c.scopes),
        last_refreshed_at       = pg_catalog.now(),
        status                  = 'active'
    WHERE c.id = p_connection_id AND c.is_active;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION otobot.complete_refresh(uuid, text, text, text, timestamptz, text[], text) IS
    'Stores refreshed tokens (encrypted; a missing refresh token keeps the old) and releases the lease.';

-- A failed refresh. Permanent (invalid_grant): the connection is expired and
-- the failure audited; returns what the failure webhook needs. Transient:
-- the lease becomes a back-off.
CREATE FUNCTION otobot.fail_refresh(p_connection_id uuid, p_owner text, p_permanent boolean, p_reason text,
                                    p_retry_after_seconds integer, p_request_id text)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    c record;
BEGIN
    PERFORM otobot.begin_scope('system', NULL, NULL, 'refresher', p_request_id);
    PERFORM otobot.check_text(p_reason, 'reason', 500);
    -- Lock order as in the claims: the connection row, then its lease.
    SELECT cc.id, cc.user_id, cc.client_id, s.service_code INTO c
    FROM otobot.client_connections cc JOIN otobot.services s ON s.id = cc.service_id
    WHERE cc.id = p_connection_id
    FOR NO KEY UPDATE OF cc;
    IF NOT FOUND OR NOT EXISTS (SELECT 1 FROM otobot.refresh_leases l
                                WHERE l.connection_id = p_connection_id AND l.owner = p_owner) THEN
        RETURN NULL;
    END IF;
    IF p_permanent THEN
        DELETE FROM otobot.refresh_leases WHERE connection_id = p_connection_id;
        PERFORM pg_catalog.set_config('otobot.reason', COALESCE(p_reason, 'refresh failed'), true);
        UPDATE otobot.client_connections SET status = 'expired' WHERE id = p_connection_id AND status = 'active';
        PERFORM otobot.write_audit('refresh_failed', c.id, c.user_id, c.client_id, c.service_code,
                                   pg_catalog.jsonb_build_object('reason', p_reason, 'permanent', true));
    ELSE
        UPDATE otobot.refresh_leases
        SET owner = 'backoff', failures = failures + 1, last_error = p_reason,
            lease_until = pg_catalog.now() + pg_catalog.make_interval(secs => GREATEST(COALESCE(p_retry_after_seconds, 30), 1))
        WHERE connection_id = p_connection_id;
    END IF;
    RETURN pg_catalog.jsonb_build_object('connectionId', c.id, 'userId', c.user_id, 'service', c.service_code,
                                         'reason', p_reason, 'permanent', p_permanent);
END
$$;
COMMENT ON FUNCTION otobot.fail_refresh(uuid, text, boolean, text, integer, text) IS
    'Records a failed refresh: permanent → connection expired and audited; transient → back-off.';

CREATE FUNCTION otobot.refresh_failures(p_connection_id uuid) RETURNS integer
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = ''
AS $$
    SELECT COALESCE((SELECT l.failures FROM otobot.refresh_leases l WHERE l.connection_id = p_connection_id), 0)
$$;
COMMENT ON FUNCTION otobot.refresh_failures(uuid) IS 'Consecutive transient refresh failures of a connection.';

-- Tokens to revoke at the provider before a disconnect (owner, or an admin
-- of the same client). Audited as a read.
CREATE FUNCTION otobot.tokens_for_revocation(p_connection_id uuid, p_actor_user_id uuid, p_request_id text)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    c record;
BEGIN
    PERFORM otobot.begin_actor(p_actor_user_id, 'tooljet', p_request_id);
    SELECT cc.id, cc.user_id, cc.client_id, s.service_code, cc.encrypted_access_token, cc.encrypted_refresh_token
    INTO c
    FROM otobot.client_connections cc JOIN otobot.services s ON s.id = cc.service_id
    WHERE cc.id = p_connection_id AND cc.is_active AND cc.credential_type = 'oauth2';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM otobot.write_audit('credential_read', c.id, c.user_id, c.client_id, c.service_code,
                               '{"purpose":"revocation"}');
    RETURN pg_catalog.jsonb_build_object(
        'service', c.service_code,
        'accessToken', otobot.try_decrypt(c.encrypted_access_token, c.id::text || ':encrypted_access_token'),
        'refreshToken', CASE WHEN c.encrypted_refresh_token IS NOT NULL
            THEN otobot.try_decrypt(c.encrypted_refresh_token, c.id::text || ':encrypted_refresh_token') END);
END
$$;
COMMENT ON FUNCTION otobot.tokens_for_revocation(uuid, uuid, text) IS
    'Decrypts a connection''s tokens for revocation at the provider (owner or same-client admin); audited.';

-- ---------------------------------------------------------------------------
-- Privileges
-- ---------------------------------------------------------------------------
REVOKE EXECUTE ON FUNCTION
    otobot.sync_services(jsonb),
    otobot.begin_oauth(uuid, text, bytea, text, text, text, integer, text),
    otobot.consume_oauth_state(bytea, text),
    otobot.refresh_job(uuid),
    otobot.claim_refresh(uuid, text, integer, integer, text),
    otobot.claim_expiring(integer, integer, text, integer),
    otobot.complete_refresh(uuid, text, text, text, timestamptz, text[], text),
    otobot.fail_refresh(uuid, text, boolean, text, integer, text),
    otobot.refresh_failures(uuid),
    otobot.tokens_for_revocation(uuid, uuid, text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    otobot.sync_services(jsonb),
    otobot.begin_oauth(uuid, text, bytea, text, text, text, integer, text),
    otobot.consume_oauth_state(bytea, text),
    otobot.claim_refresh(uuid, text, integer, integer, text),
    otobot.claim_expiring(integer, integer, text, integer),
    otobot.complete_refresh(uuid, text, text, text, timestamptz, text[], text),
    otobot.fail_refresh(uuid, text, boolean, text, integer, text),
    otobot.refresh_failures(uuid),
    otobot.tokens_for_revocation(uuid, uuid, text)
TO otobot_api;
