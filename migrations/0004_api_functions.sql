-- ============================================================================
-- 0004 — the vault's API: SECURITY DEFINER functions, one round trip each
--
-- Every function here: owned by otobot_owner, search_path pinned to '',
-- every name qualified, EXECUTE granted only to the roles named at the end.
-- Each starts with otobot.begin_scope(), so row-level security applies.
-- ============================================================================
SET LOCAL ROLE otobot_owner;

-- ---------------------------------------------------------------------------
-- Internal helpers (no SET clause: they run inside the caller's scope)
-- ---------------------------------------------------------------------------

-- Decrypt, or NULL when the value does not decrypt (tampered, wrong
-- associated data, unknown key version, malformed). A missing keyring is not
-- caught: it is a configuration fault, not a bad row.
CREATE FUNCTION otobot.try_decrypt(p_ciphertext text, p_aad text) RETURNS text
    LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    RETURN otobot.otobot_decrypt(p_ciphertext, p_aad);
EXCEPTION
    WHEN invalid_text_representation OR data_corrupted OR undefined_object OR character_not_in_repertoire THEN
        RETURN NULL;
END
$$;
COMMENT ON FUNCTION otobot.try_decrypt(text, text) IS
    'otobot_decrypt, returning NULL instead of raising for a value that does not decrypt.';

-- The active user and its client; raises when the user is unknown or
-- inactive. Call it in system scope.
CREATE FUNCTION otobot.active_user(p_user_id uuid, OUT client_id uuid, OUT role text)
    LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    SELECT u.client_id, u.role INTO client_id, role
    FROM otobot.users u
    JOIN otobot.clients c ON c.id = u.client_id
    WHERE u.id = p_user_id AND u.is_active AND c.is_active;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'otobot: user not found or inactive' USING ERRCODE = 'no_data_found';
    END IF;
END
$$;
COMMENT ON FUNCTION otobot.active_user(uuid) IS 'Client and role of an active user (system scope lookup).';

CREATE FUNCTION otobot.check_text(p_value text, p_what text, p_max integer) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF p_value IS NOT NULL AND (pg_catalog.length(p_value) < 1 OR pg_catalog.length(p_value) > p_max) THEN
        RAISE EXCEPTION 'otobot: % must be 1 to % characters', p_what, p_max
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;
COMMENT ON FUNCTION otobot.check_text(text, text, integer) IS 'Raises 22023 when a text value is empty or too long.';

-- Store a connection, encrypting its secrets with AAD (row id, column)
-- before the row is written. -- Reconnecting the same account updates its connection: match on the
-- account identifier first, then on the label.
CREATE FUNCTION otobot.store_connection(
    p_type text, p_user_id uuid, p_service_code text, p_secret text, p_refresh_token text,
    p_expires_at timestamptz, p_scopes text[], p_account_identifier text, p_label text,
    p_source text, p_request_id text)
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_user    record;
    v_service otobot.services;
    v_id      uuid;
BEGIN
    PERFORM otobot.begin_scope('system', NULL, NULL, p_source, p_request_id);
    IF p_user_id IS NULL OR p_service_code IS NULL OR p_secret IS NULL THEN
        RAISE EXCEPTION 'otobot: user id, service and secret are required' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM otobot.check_text(p_secret, CASE p_type WHEN 'api_key' THEN 'the API key' ELSE 'the access token' END, 65536);
    PERFORM otobot.check_text(p_refresh_token, 'the refresh token', 65536);
    PERFORM otobot.check_text(p_label, 'label', 100);
    PERFORM otobot.check_text(p_account_identifier, 'account identifier', 320);
    v_user := otobot.active_user(p_user_id);
    SELECT * INTO v_service FROM otobot.services s WHERE s.service_code = p_service_code AND s.is_active;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'otobot: unknown service' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_type = 'oauth2' AND v_service.auth_type <> 'oauth2' THEN
        RAISE EXCEPTION 'otobot: service % does not use OAuth2', p_service_code USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_type = 'api_key' AND NOT v_service.accepts_api_key THEN
        RAISE EXCEPTION 'otobot: service % does not accept an API key', p_service_code USING ERRCODE = 'invalid_parameter_value';
    END IF;

    PERFORM otobot.begin_scope('user', p_user_id, v_user.client_id, p_source, p_request_id);
    IF p_account_identifier IS NOT NULL THEN
        SELECT c.id INTO v_id
        FROM otobot.client_connections c
        WHERE c.user_id = p_user_id AND c.service_id = v_service.id AND c.is_active
          AND c.credential_type = p_type AND c.account_identifier = p_account_identifier
          AND (p_label IS NULL OR c.label IS NOT DISTINCT FROM p_label)
        ORDER BY c.updated_at DESC
        LIMIT 1
        FOR UPDATE;
    END IF;
    IF v_id IS NULL THEN
        SELECT c.id INTO v_id
        FROM otobot.client_connections c
        WHERE c.user_id = p_user_id AND c.service_id = v_service.id
          AND COALESCE(c.label, '') = COALESCE(p_label, '') AND c.is_active
        FOR UPDATE;
    END IF;
    IF v_id IS NOT NULL THEN
        UPDATE otobot.client_connections c
        SET credential_type         = p_type,
            encrypted_access_token  = otobot.otobot_encrypt(p_secret, v_id::text || ':encrypted_access_token'),
            -- A new token without a refresh token keeps the stored one.
            encrypted_refresh_token = CASE
                WHEN p_type = 'api_key' THEN NULL
                WHEN p_refresh_token IS NULL THEN c.encrypted_refresh_token
                ELSE otobot.otobot_encrypt(p_refresh_token, v_id::text || ':encrypted_refresh_token') END,
            token_expires_at        = CASE WHEN p_type = 'api_key' THEN NULL ELSE p_expires_at END,
            scopes                  = COALESCE(p_scopes, '{}'),
            account_identifier      = COALESCE(p_account_identifier, c.account_identifier),
            status                  = 'active'
        WHERE c.id = v_id;
    ELSE
        v_id := pg_catalog.gen_random_uuid();
        INSERT INTO otobot.client_connections
            (id, client_id, user_id, service_id, credential_type, label, account_identifier,
             encrypted_access_token, encrypted_refresh_token, token_expires_at, scopes)
        VALUES
            (v_id, v_user.client_id, p_user_id, v_service.id, p_type, p_label, p_account_identifier,
             otobot.otobot_encrypt(p_secret, v_id::text || ':encrypted_access_token'),
             CASE WHEN p_type = 'oauth2' AND p_refresh_token IS NOT NULL
                  THEN otobot.otobot_encrypt(p_refresh_token, v_id::text || ':encrypted_refresh_token') END,
             CASE WHEN p_type = 'oauth2' THEN p_expires_at END,
             COALESCE(p_scopes, '{}'));
    END IF;
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION otobot.store_connection(text, uuid, text, text, text, timestamptz, text[], text, text, text, text) IS
    'Creates or updates a user''s connection, encrypting its secrets with AAD <id>:<column>.';

-- ---------------------------------------------------------------------------
-- Storing credentials
-- ---------------------------------------------------------------------------
CREATE FUNCTION otobot.store_oauth_connection(
    p_user_id uuid, p_service_code text, p_access_token text, p_refresh_token text,
    p_expires_at timestamptz, p_scopes text[], p_account_identifier text, p_label text,
    p_source text, p_request_id text)
    RETURNS uuid
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
    SELECT otobot.store_connection('oauth2', p_user_id, p_service_code, p_access_token, p_refresh_token,
                                   p_expires_at, p_scopes, p_account_identifier, p_label, p_source, p_request_id)
$$;
COMMENT ON FUNCTION otobot.store_oauth_connection(uuid, text, text, text, timestamptz, text[], text, text, text, text) IS
    'Stores an OAuth2 connection (tokens encrypted, audited). A NULL refresh token keeps the stored one.';

CREATE FUNCTION otobot.store_api_key(
    p_user_id uuid, p_service_code text, p_api_key text, p_label text,
    p_account_identifier text, p_source text, p_request_id text)
    RETURNS uuid
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
    SELECT otobot.store_connection('api_key', p_user_id, p_service_code, p_api_key, NULL,
                                   NULL, NULL, p_account_identifier, p_label, p_source, p_request_id)
$$;
COMMENT ON FUNCTION otobot.store_api_key(uuid, text, text, text, text, text, text) IS
    'Stores an API key connection (encrypted, audited).';

-- A user scope sees its own client's row (to check it is active).
CREATE POLICY clients_of_scoped_user ON otobot.clients FOR SELECT TO otobot_owner
    USING (otobot.scope_kind() = 'user'
           AND id = (SELECT u.client_id FROM otobot.users u WHERE u.id = otobot.scope_user()));

-- ---------------------------------------------------------------------------
-- The hot path, refresh-aware. With p_refresh_margin_seconds, a refreshable
-- token that expires within the margin is not handed out: the caller gets
-- code refresh_required and refreshes first. An expired connection (failed
-- refresh) is reported as such, never handed out as valid.
-- ---------------------------------------------------------------------------
CREATE FUNCTION otobot.get_user_credentials(
    p_user_id uuid, p_service_code text, p_connection_id uuid DEFAULT NULL, p_label text DEFAULT NULL,
    p_source text DEFAULT 'n8n', p_request_id text DEFAULT NULL, p_refresh_margin_seconds integer DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    c        record;
    v_secret text;
    v_meta   jsonb;
BEGIN
    IF p_user_id IS NULL OR p_service_code IS NULL THEN
        RAISE EXCEPTION 'otobot: user id and service are required' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM otobot.begin_scope('user', p_user_id, NULL, p_source, p_request_id);
    SELECT cc.id, cc.client_id, cc.credential_type, cc.encrypted_access_token, cc.label, cc.status,
           cc.account_identifier, cc.token_expires_at, cc.scopes, cc.encrypted_refresh_token IS NOT NULL AS refreshable
    INTO c
    FROM otobot.client_connections cc
    JOIN otobot.services s ON s.id = cc.service_id
    WHERE cc.user_id = p_user_id AND s.service_code = p_service_code
      AND cc.is_active AND cc.status IN ('active', 'expired')
      -- SECURITY: a deactivated user or client gets nothing, even if a
      -- connection was left active by a manual change.
      AND EXISTS (SELECT 1 FROM otobot.users u JOIN otobot.clients cl ON cl.id = u.client_id
                  WHERE u.id = cc.user_id AND u.is_active AND cl.is_active)
      AND (p_connection_id IS NULL OR cc.id = p_connection_id)
      AND (p_label IS NULL OR cc.label = p_label)
    ORDER BY cc.status = 'active' DESC, cc.updated_at DESC
    LIMIT 1;
    IF NOT FOUND THEN
        PERFORM otobot.write_audit('credential_not_found', p_connection_id, p_user_id, NULL, p_service_code,
                                   pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('label', p_label)));
        RETURN pg_catalog.jsonb_build_object('hasCredentials', false, 'code', 'connection_not_found');
    END IF;
    v_meta := pg_catalog.jsonb_build_object(
        'accountIdentifier', c.account_identifier,
        'label', c.label,
        'tokenExpired', c.status = 'expired' OR (c.token_expires_at IS NOT NULL AND c.token_expires_at <= pg_catalog.now()),
        'expiresAt', c.token_expires_at,
        'scopes', pg_catalog.to_jsonb(c.scopes));
    IF c.status = 'expired' THEN
        PERFORM otobot.write_audit('credential_expired', c.id, p_user_id, c.client_id, p_service_code, '{}');
        RETURN pg_catalog.jsonb_build_object('hasCredentials', false, 'code', 'connection_expired',
                                             'connectionId', c.id, 'service', p_service_code,
                                             'metadata', v_meta || '{"status":"expired"}');
    END IF;
    IF p_refresh_margin_seconds IS NOT NULL AND c.refreshable AND c.token_expires_at IS NOT NULL
       AND c.token_expires_at <= pg_catalog.now() + pg_catalog.make_interval(secs => p_refresh_margin_seconds) THEN
        RETURN pg_catalog.jsonb_build_object('hasCredentials', false, 'code', 'refresh_required', 'connectionId', c.id);
    END IF;

    v_secret := otobot.try_decrypt(c.encrypted_access_token, c.id::text || ':encrypted_access_token');
    IF v_secret IS NULL THEN
        -- SECURITY: the failure is recorded and committed; no secret leaves.
        PERFORM otobot.write_audit('decrypt_failed', c.id, p_user_id, c.client_id, p_service_code,
                                   '{"column":"encrypted_access_token"}');
        RETURN pg_catalog.jsonb_build_object('hasCredentials', false, 'code', 'decryption_failed',
                                             'connectionId', c.id);
    END IF;

    -- SECURITY: same transaction as the read: no audit row, no secret.
    PERFORM otobot.write_audit('credential_read', c.id, p_user_id, c.client_id, p_service_code, '{}');
    RETURN pg_catalog.jsonb_build_object(
        'connectionId', c.id,
        'service', p_service_code,
        'hasCredentials', true,
        'credentials', CASE c.credential_type
            WHEN 'api_key' THEN pg_catalog.jsonb_build_object('apiKey', v_secret, 'tokenType', 'api_key')
            ELSE pg_catalog.jsonb_build_object('accessToken', v_secret, 'tokenType', 'Bearer') END,
        'metadata', v_meta);
END
$$;
COMMENT ON FUNCTION otobot.get_user_credentials(uuid, text, uuid, text, text, text, integer) IS
    'Decrypts one user''s access token or API key for a service (never the refresh token) and audits the read. '
    'hasCredentials=false with code connection_not_found, connection_expired, refresh_required or decryption_failed.';

-- ---------------------------------------------------------------------------
-- Metadata (no secrets)
-- ---------------------------------------------------------------------------
CREATE FUNCTION otobot.list_user_connections(p_user_id uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    PERFORM otobot.begin_scope('user', p_user_id, NULL, 'api', NULL);
    RETURN pg_catalog.jsonb_build_object(
        'userId', p_user_id,
        'connections', COALESCE((
            SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                       'id', c.id,
                       'service_name', s.service_code,
                       'label', c.label,
                       'account_identifier', c.account_identifier,
                       'status', c.status,
                       'is_active', c.is_active,
                       'token_expires_at', c.token_expires_at,
                       'created_at', c.created_at) ORDER BY c.created_at, c.id)
            FROM otobot.client_connections c
            JOIN otobot.services s ON s.id = c.service_id
            WHERE c.user_id = p_user_id), '[]'::jsonb));
END
$$;
COMMENT ON FUNCTION otobot.list_user_connections(uuid) IS 'A user''s connections, metadata only.';

CREATE FUNCTION otobot.connection_status(p_connection_id uuid, p_refresh_window_seconds integer DEFAULT 600)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    c record;
BEGIN
    IF p_refresh_window_seconds IS NULL OR p_refresh_window_seconds < 0 THEN
        RAISE EXCEPTION 'otobot: refresh window must be zero or more seconds' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM otobot.begin_scope('system', NULL, NULL, 'api', NULL);
    SELECT cc.id, s.service_code, cc.status, cc.is_active, cc.token_expires_at, cc.last_refreshed_at,
           cc.encrypted_refresh_token IS NOT NULL AS refreshable, cc.user_id, cc.label, cc.account_identifier
    INTO c
    FROM otobot.client_connections cc
    JOIN otobot.services s ON s.id = cc.service_id
    WHERE cc.id = p_connection_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN pg_catalog.jsonb_build_object(
        'id', c.id,
        'service_name', c.service_code,
        'status', CASE
            WHEN NOT c.is_active OR c.status = 'revoked' THEN 'revoked'
            WHEN c.status = 'expired' THEN 'expired'
            WHEN c.token_expires_at IS NULL THEN 'valid'
            WHEN c.token_expires_at <= pg_catalog.now() AND NOT c.refreshable THEN 'expired'
            WHEN c.token_expires_at <= pg_catalog.now() + pg_catalog.make_interval(secs => p_refresh_window_seconds)
                THEN 'refresh_needed'
            ELSE 'valid' END,
        'expiresAt', c.token_expires_at,
        'isActive', c.is_active,
        'lastRefreshedAt', c.last_refreshed_at,
        'userId', c.user_id,
        'label', c.label,
        'accountIdentifier', c.account_identifier);
END
$$;
COMMENT ON FUNCTION otobot.connection_status(uuid, integer) IS
    'valid | refresh_needed | expired | revoked for one connection; NULL when it does not exist.';

CREATE FUNCTION otobot.list_services() RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = ''
AS $$
    SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'code', s.service_code, 'displayName', s.display_name,
               'authType', s.auth_type, 'acceptsApiKey', s.accepts_api_key) ORDER BY s.service_code), '[]')
    FROM otobot.services s
    WHERE s.is_active
$$;
COMMENT ON FUNCTION otobot.list_services() IS 'The active service catalogue.';

-- ---------------------------------------------------------------------------
-- Changes
-- ---------------------------------------------------------------------------
CREATE FUNCTION otobot.deactivate_connection(
    p_connection_id uuid, p_actor_user_id uuid, p_source text, p_request_id text, p_reason text DEFAULT NULL)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_actor record;
BEGIN
    PERFORM otobot.check_text(p_reason, 'reason', 500);
    IF p_actor_user_id IS NULL THEN
        -- A service or the DBA: the caller's identity is the source.
        PERFORM otobot.begin_scope('system', NULL, NULL, p_source, p_request_id);
    ELSE
        -- A person: their own connections, or their client's when admin.
        PERFORM otobot.begin_scope('system', NULL, NULL, p_source, p_request_id);
        v_actor := otobot.active_user(p_actor_user_id);
        PERFORM otobot.begin_scope(CASE v_actor.role WHEN 'admin' THEN 'admin' ELSE 'user' END,
                                   p_actor_user_id, v_actor.client_id, p_source, p_request_id);
    END IF;
    PERFORM pg_catalog.set_config('otobot.reason', COALESCE(p_reason, ''), true);
    UPDATE otobot.client_connections c
    SET is_active = false, status = 'revoked'
    WHERE c.id = p_connection_id AND c.is_active;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION otobot.deactivate_connection(uuid, uuid, text, text, text) IS
    'Deactivates a connection (audited). With an actor, only their own or, for an admin, their client''s.';

-- ---------------------------------------------------------------------------
-- DBA break-glass
-- ---------------------------------------------------------------------------
CREATE FUNCTION otobot.reveal_credential(p_connection_id uuid, p_reason text) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    c         record;
    v_access  text;
    v_refresh text;
BEGIN
    IF p_reason IS NULL OR pg_catalog.length(pg_catalog.btrim(p_reason)) < 10 OR pg_catalog.length(p_reason) > 500 THEN
        RAISE EXCEPTION 'otobot: a reason of 10 to 500 characters is required to reveal a credential'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM otobot.begin_scope('system', NULL, NULL, 'dba', NULL);
    SELECT cc.id, cc.user_id, cc.client_id, s.service_code, cc.encrypted_access_token, cc.encrypted_refresh_token
    INTO c
    FROM otobot.client_connections cc
    JOIN otobot.services s ON s.id = cc.service_id
    WHERE cc.id = p_connection_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    v_access := otobot.try_decrypt(c.encrypted_access_token, c.id::text || ':encrypted_access_token');
    IF c.encrypted_refresh_token IS NOT NULL THEN
        v_refresh := otobot.try_decrypt(c.encrypted_refresh_token, c.id::text || ':encrypted_refresh_token');
    END IF;
    IF v_access IS NULL OR (c.encrypted_refresh_token IS NOT NULL AND v_refresh IS NULL) THEN
        PERFORM otobot.write_audit('decrypt_failed', c.id, c.user_id, c.client_id, c.service_code,
                                   pg_catalog.jsonb_build_object('reason', p_reason));
        RETURN pg_catalog.jsonb_build_object('connectionId', c.id, 'error', 'decryption_failed');
    END IF;
    PERFORM otobot.write_audit('credential_revealed', c.id, c.user_id, c.client_id, c.service_code,
                               pg_catalog.jsonb_build_object('reason', p_reason));
    RETURN pg_catalog.jsonb_build_object('connectionId', c.id, 'service', c.service_code,
                                         'accessToken', v_access, 'refreshToken', v_refresh);
END
$$;
COMMENT ON FUNCTION otobot.reveal_credential(uuid, text) IS
    'DBA break-glass: decrypts a connection''s tokens with a stated reason; audited with the database role.';

-- ---------------------------------------------------------------------------
-- Privileges
-- ---------------------------------------------------------------------------
REVOKE EXECUTE ON FUNCTION
    otobot.try_decrypt(text, text),
    otobot.active_user(uuid),
    otobot.check_text(text, text, integer),
    otobot.store_connection(text, uuid, text, text, text, timestamptz, text[], text, text, text, text),
    otobot.store_oauth_connection(uuid, text, text, text, timestamptz, text[], text, text, text, text),
    otobot.store_api_key(uuid, text, text, text, text, text, text),
    otobot.get_user_credentials(uuid, text, uuid, text, text, text, integer),
    otobot.list_user_connections(uuid),
    otobot.connection_status(uuid, integer),
    otobot.list_services(),
    otobot.deactivate_connection(uuid, uuid, text, text, text),
    otobot.reveal_credential(uuid, text)
FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    otobot.store_oauth_connection(uuid, text, text, text, timestamptz, text[], text, text, text, text),
    otobot.store_api_key(uuid, text, text, text, text, text, text),
    otobot.get_user_credentials(uuid, text, uuid, text, text, text, integer),
    otobot.list_user_connections(uuid),
    otobot.connection_status(uuid, integer),
    otobot.list_services()
TO otobot_api;
GRANT EXECUTE ON FUNCTION otobot.deactivate_connection(uuid, uuid, text, text, text) TO otobot_api, otobot_dba;
GRANT EXECUTE ON FUNCTION otobot.reveal_credential(uuid, text) TO otobot_dba;
