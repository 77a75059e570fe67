-- What-if for bench/refresh (--extra-sql): complete_refresh and fail_refresh
-- take the connection's row lock BEFORE touching its lease row, the order
-- claim_expiring and claim_refresh use (connection, then lease).
--
-- Why: claim_expiring locks its candidates FOR UPDATE with the snapshot of
-- its statement start. A candidate that another refresher leased (and
-- committed) after that snapshot is no longer row-locked, so it is locked
-- again and offered to INSERT ... ON CONFLICT, which then waits for any
-- transaction changing that lease row. If the other refresher has meanwhile
-- finished the provider call, its complete_refresh has already deleted the
-- lease row (not committed) and waits for the claim's row lock in its UPDATE
-- of the connection: a deadlock (40P01; seen in bench/refresh, PostgreSQL
-- log: "while inserting index tuple ... in relation refresh_leases").
-- Whichever side the detector cancels loses: the claim aborts
-- `otobot refresher --once` (exit 1); a cancelled complete_refresh loses the
-- provider's rotated refresh token (the connection later fails with
-- invalid_grant).
--
-- The bodies are 0007's, plus the PERFORM ... FOR NO KEY UPDATE line.
CREATE OR REPLACE FUNCTION otobot.complete_refresh(p_connection_id uuid, p_owner text, p_access_token text, p_refresh_token text,
                                        p_expires_at timestamptz, p_scopes text[], p_request_id text)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    PERFORM otobot.begin_scope('system', NULL, NULL, 'refresher', p_request_id);
    PERFORM otobot.check_text(p_access_token, 'the access token', 65536);
    PERFORM otobot.check_text(p_refresh_token, 'the refresh token', 65536);
    -- Lock order: the connection first, then its lease (as the claims do).
    PERFORM 1 FROM otobot.client_connections c WHERE c.id = p_connection_id FOR NO KEY UPDATE;
    DELETE FROM otobot.refresh_leases WHERE connection_id = p_connection_id AND owner = p_owner;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pg_catalog.set_config('otobot.token_change', 'tokens_refreshed', true);
    UPDATE otobot.client_connections c
    SET encrypted_access_token  = otobot.otobot_encrypt(p_access_token, c.id::text || ':encrypted_access_token'),
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

CREATE OR REPLACE FUNCTION otobot.fail_refresh(p_connection_id uuid, p_owner text, p_permanent boolean, p_reason text,
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
    SELECT cc.id, cc.user_id, cc.client_id, s.service_code INTO c
    FROM otobot.client_connections cc JOIN otobot.services s ON s.id = cc.service_id
    WHERE cc.id = p_connection_id
    -- Lock order: the connection first, then its lease (as the claims do).
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
