-- ============================================================================
-- 0012 — the portal: browser sessions, and each user's own access history.
--
-- A portal session is a row here plus an HttpOnly cookie that carries a
-- signed copy of its random id; only the id's SHA-256 is stored, so a copy of
-- this table opens no session. Ending the row (logout) ends the session on
-- every replica at once. The access history reads the audit log under the
-- logs_own policy: a user, admins included, sees only their own rows.
-- ============================================================================
SET LOCAL ROLE otobot_owner;

-- ---------------------------------------------------------------------------
-- Sessions
-- ---------------------------------------------------------------------------
CREATE TABLE otobot.portal_sessions (
    id_hash      bytea PRIMARY KEY CHECK (pg_catalog.octet_length(id_hash) = 32),
    user_id      uuid NOT NULL,
    client_id    uuid NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    ended_at     timestamptz,
    FOREIGN KEY (user_id, client_id) REFERENCES otobot.users (id, client_id)
);
CREATE INDEX portal_sessions_user_idx ON otobot.portal_sessions (user_id, created_at);
COMMENT ON TABLE otobot.portal_sessions IS
    'Browser sessions of the portal: SHA-256 of the session id (the cookie holds a signed id), owner, absolute expiry, last use, logout.';
ALTER TABLE otobot.portal_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE otobot.portal_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY portal_sessions_system ON otobot.portal_sessions TO otobot_owner
    USING (otobot.scope_kind() = 'system') WITH CHECK (otobot.scope_kind() = 'system');
CREATE POLICY portal_sessions_auditor ON otobot.portal_sessions FOR SELECT TO otobot_auditor USING (true);
REVOKE ALL ON otobot.portal_sessions FROM PUBLIC;
GRANT SELECT (user_id, client_id, created_at, expires_at, last_seen_at, ended_at)
    ON otobot.portal_sessions TO otobot_auditor;

-- Live sessions one user may hold; a new login beyond it ends the oldest.
-- (Two or three browsers each, with room to spare, for ~500 users.)
CREATE FUNCTION otobot.start_portal_session(p_user_id uuid, p_id_hash bytea, p_ttl_seconds integer,
                                            p_request_id text)
    RETURNS timestamptz
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_user    record;
    v_expires timestamptz;
BEGIN
    IF p_id_hash IS NULL OR pg_catalog.octet_length(p_id_hash) <> 32 THEN
        RAISE EXCEPTION 'otobot: a session id hash is 32 bytes' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_ttl_seconds IS NULL OR p_ttl_seconds NOT BETWEEN 60 AND 604800 THEN
        RAISE EXCEPTION 'otobot: session lifetime must be 60 to 604800 seconds' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM otobot.begin_scope('system', NULL, NULL, 'portal', p_request_id);
    v_user := otobot.active_user(p_user_id);
    -- Housekeeping, bounded to this user: rows ended or expired a day ago go.
    DELETE FROM otobot.portal_sessions s
    WHERE s.user_id = p_user_id
      AND (s.ended_at < pg_catalog.now() - interval '1 day' OR s.expires_at < pg_catalog.now() - interval '1 day');
    UPDATE otobot.portal_sessions s SET ended_at = pg_catalog.now()
    WHERE s.id_hash IN (SELECT o.id_hash FROM otobot.portal_sessions o
                        WHERE o.user_id = p_user_id AND o.ended_at IS NULL AND o.expires_at > pg_catalog.now()
                        ORDER BY o.created_at DESC OFFSET 19);
    INSERT INTO otobot.portal_sessions (id_hash, user_id, client_id, expires_at)
    VALUES (p_id_hash, p_user_id, v_user.client_id, pg_catalog.now() + pg_catalog.make_interval(secs => p_ttl_seconds))
    RETURNING expires_at INTO v_expires;
    RETURN v_expires;
END
$$;
COMMENT ON FUNCTION otobot.start_portal_session(uuid, bytea, integer, text) IS
    'Opens a portal session for an active user (id stored as its SHA-256; at most 20 live per user); returns its expiry.';

-- The user a session acts for, or NULL when it is unknown, ended, expired,
-- idle too long, or its user or client is no longer active.
CREATE FUNCTION otobot.portal_session_actor(p_id_hash bytea, p_idle_seconds integer) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v record;
BEGIN
    IF p_idle_seconds IS NULL OR p_idle_seconds NOT BETWEEN 60 AND 604800 THEN
        RAISE EXCEPTION 'otobot: idle timeout must be 60 to 604800 seconds' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM otobot.begin_scope('system', NULL, NULL, 'portal', NULL);
    SELECT s.user_id, s.client_id, s.last_seen_at, u.role INTO v
    FROM otobot.portal_sessions s
    JOIN otobot.users u ON u.id = s.user_id
    JOIN otobot.clients c ON c.id = u.client_id
    WHERE s.id_hash = p_id_hash
      AND s.ended_at IS NULL
      AND s.expires_at > pg_catalog.now()
      AND s.last_seen_at > pg_catalog.now() - pg_catalog.make_interval(secs => p_idle_seconds)
      AND u.is_active AND c.is_active;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- One write a minute per session at most, not one per request.
    IF v.last_seen_at < pg_catalog.now() - interval '1 minute' THEN
        UPDATE otobot.portal_sessions s SET last_seen_at = pg_catalog.now() WHERE s.id_hash = p_id_hash;
    END IF;
    RETURN pg_catalog.jsonb_build_object('userId', v.user_id, 'clientId', v.client_id, 'role', v.role);
END
$$;
COMMENT ON FUNCTION otobot.portal_session_actor(bytea, integer) IS
    'The active user of a live portal session (not ended, expired or idle), or NULL; records its use.';

CREATE FUNCTION otobot.end_portal_session(p_id_hash bytea) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    PERFORM otobot.begin_scope('system', NULL, NULL, 'portal', NULL);
    UPDATE otobot.portal_sessions s SET ended_at = pg_catalog.now()
    WHERE s.id_hash = p_id_hash AND s.ended_at IS NULL;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION otobot.end_portal_session(bytea) IS 'Ends a portal session (logout); true if it was live.';

-- ---------------------------------------------------------------------------
-- Access history: the actor's own audit rows, newest first, a page at a time
-- ---------------------------------------------------------------------------
-- The history pages by user; without this index each page would scan the log.
-- (Building it locks the log against inserts for as long as it takes: on a
-- very large log, apply this migration in a quiet moment.)
CREATE INDEX credential_access_logs_user_idx ON otobot.credential_access_logs (user_id, id DESC);

-- TODO(grants, issue 11): once 0011 records the workflow and the grant of a
-- read, add them to each entry ("workflow", "grantId") before this ships.
CREATE FUNCTION otobot.list_own_access_history(p_actor_user_id uuid, p_before_id bigint, p_limit integer,
                                               p_reads_only boolean, p_service_code text)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_user    record;
    v_entries jsonb;
    v_next    bigint;
    v_count   bigint;
BEGIN
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'otobot: limit must be 1 to 100' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_before_id IS NOT NULL AND p_before_id < 1 THEN
        RAISE EXCEPTION 'otobot: before must be a positive entry id' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM otobot.check_text(p_service_code, 'service', 63);
    PERFORM otobot.begin_scope('system', NULL, NULL, 'portal', NULL);
    v_user := otobot.active_user(p_actor_user_id);
    -- SECURITY: a user scope even for an admin, so logs_own is the only
    -- policy that matches: an admin's history is their own, not their client's.
    PERFORM otobot.begin_scope('user', p_actor_user_id, v_user.client_id, 'portal', NULL);
    SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'id', x.id, 'at', x.created_at, 'action', x.action, 'source', x.source,
               'service', x.service_code, 'connectionId', x.client_connection_id,
               'label', x.label, 'accountIdentifier', x.account_identifier,
               'requestId', x.request_id, 'detail', x.detail) ORDER BY x.id DESC), '[]'::jsonb),
           pg_catalog.count(*)
    INTO v_entries, v_count
    FROM (SELECT l.id, l.created_at, l.action, l.source, l.service_code, l.client_connection_id,
                 l.request_id, l.detail, c.label, c.account_identifier
          FROM otobot.credential_access_logs l
          LEFT JOIN otobot.client_connections c ON c.id = l.client_connection_id
          WHERE l.user_id = p_actor_user_id
            AND (p_before_id IS NULL OR l.id < p_before_id)
            AND (NOT COALESCE(p_reads_only, true) OR l.action IN
                 ('credential_read', 'credential_revealed', 'credential_expired', 'credential_not_found', 'decrypt_failed'))
            AND (p_service_code IS NULL OR l.service_code = p_service_code)
          ORDER BY l.id DESC
          LIMIT p_limit + 1) x;
    -- One row more than asked tells whether another page follows.
    IF v_count > p_limit THEN
        v_entries := v_entries - (-1);
        v_next := (v_entries -> -1 ->> 'id')::bigint;
    END IF;
    RETURN pg_catalog.jsonb_build_object('entries', v_entries, 'nextBefore', v_next);
END
$$;
COMMENT ON FUNCTION otobot.list_own_access_history(uuid, bigint, integer, boolean, text) IS
    'The acting user''s own audit rows (reads of their secrets, or everything), newest first, keyset-paginated (at most 100).';

-- ---------------------------------------------------------------------------
-- Privileges
-- ---------------------------------------------------------------------------
REVOKE EXECUTE ON FUNCTION
    otobot.start_portal_session(uuid, bytea, integer, text),
    otobot.portal_session_actor(bytea, integer),
    otobot.end_portal_session(bytea),
    otobot.list_own_access_history(uuid, bigint, integer, boolean, text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    otobot.start_portal_session(uuid, bytea, integer, text),
    otobot.portal_session_actor(bytea, integer),
    otobot.end_portal_session(bytea),
    otobot.list_own_access_history(uuid, bigint, integer, boolean, text)
TO otobot_api;
