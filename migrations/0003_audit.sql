-- ============================================================================
-- 0003 — call context, audit writing, connection audit trigger, and the
-- keyed audit chain (sealer and verifier)
-- ============================================================================
SET LOCAL ROLE otobot_owner;

-- ---------------------------------------------------------------------------
-- Call context
--
-- begin_scope() is called first by every API function. It has no SET clause
-- on purpose: its settings must survive its own return and last until the
-- calling SECURITY DEFINER function (which pins search_path) returns.
-- ---------------------------------------------------------------------------
CREATE FUNCTION otobot.begin_scope(p_kind text, p_user_id uuid, p_client_id uuid,
                                   p_source text, p_request_id text)
    RETURNS void
    LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    IF p_kind IS NULL OR p_kind NOT IN ('user', 'admin', 'system') THEN
        RAISE EXCEPTION 'otobot: invalid scope' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_source IS NULL OR p_source !~ '^[a-z0-9][a-z0-9_.-]{0,63}$' THEN
        RAISE EXCEPTION 'otobot: source must be 1 to 64 characters of a-z, 0-9, _ . -'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_request_id IS NOT NULL AND p_request_id !~ '^[A-Za-z0-9._:/+=-]{1,128}$' THEN
        RAISE EXCEPTION 'otobot: request id must be 1 to 128 characters of A-Z a-z 0-9 . _ : / + = -'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_catalog.set_config('otobot.scope', p_kind, true),
            pg_catalog.set_config('otobot.user_id', COALESCE(p_user_id::text, ''), true),
            pg_catalog.set_config('otobot.client_id', COALESCE(p_client_id::text, ''), true),
            pg_catalog.set_config('otobot.source', p_source, true),
            pg_catalog.set_config('otobot.request_id', COALESCE(p_request_id, ''), true);
END
$$;
COMMENT ON FUNCTION otobot.begin_scope(text, uuid, uuid, text, text) IS
    'Sets the scope (user/admin/system), caller source and request id for the rest of the calling function.';

-- One audit row, with the source and request id of the current call.
-- PL/pgSQL, so the INSERT's plan is cached per session (it is on the hot path).
CREATE FUNCTION otobot.write_audit(p_action text, p_connection_id uuid, p_user_id uuid,
                                   p_client_id uuid, p_service_code text, p_detail jsonb)
    RETURNS void
    LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    INSERT INTO otobot.credential_access_logs
        (client_connection_id, user_id, client_id, service_code, source, action, request_id, detail)
    VALUES (p_connection_id, p_user_id, p_client_id, p_service_code,
            COALESCE(NULLIF(pg_catalog.current_setting('otobot.source', true), ''), 'sql'),
            p_action,
            NULLIF(pg_catalog.current_setting('otobot.request_id', true), ''),
            COALESCE(p_detail, '{}'::jsonb));
END
$$;
COMMENT ON FUNCTION otobot.write_audit(text, uuid, uuid, uuid, text, jsonb) IS
    'Appends one audit row in the current transaction: if it cannot be written, the caller fails too.';

-- ---------------------------------------------------------------------------
-- Every insert, update and deactivation of a connection is audited
-- ---------------------------------------------------------------------------
CREATE FUNCTION otobot.audit_connection_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
DECLARE
    v_action text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        v_action := 'connection_created';
    ELSIF OLD.is_active AND NOT NEW.is_active THEN
        v_action := 'connection_deactivated';
    ELSIF NEW.encrypted_access_token IS DISTINCT FROM OLD.encrypted_access_token
       OR NEW.encrypted_refresh_token IS DISTINCT FROM OLD.encrypted_refresh_token THEN
        v_action := COALESCE(
            NULLIF(pg_catalog.current_setting('otobot.token_change', true), ''), 'tokens_updated');
    ELSIF NEW.status IS DISTINCT FROM OLD.status THEN
        v_action := 'status_changed';
    ELSE
        v_action := 'connection_updated';
    END IF;
    PERFORM otobot.write_audit(
        v_action, NEW.id, NEW.user_id, NEW.client_id,
        (SELECT s.service_code FROM otobot.services s WHERE s.id = NEW.service_id),
        pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'status', NEW.status,
            'previous_status', CASE WHEN TG_OP = 'UPDATE' AND OLD.status IS DISTINCT FROM NEW.status THEN OLD.status END,
            'label', NEW.label,
            'reason', NULLIF(pg_catalog.current_setting('otobot.reason', true), ''))));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION otobot.audit_connection_change() IS
    'Audits each created, changed or deactivated connection, never its tokens.';
CREATE TRIGGER client_connections_audit
    AFTER INSERT OR UPDATE ON otobot.client_connections
    FOR EACH ROW EXECUTE FUNCTION otobot.audit_connection_change();

-- ---------------------------------------------------------------------------
-- The keyed chain
--
-- Reads only insert their audit row; nothing on the hot path touches a
-- shared row. The sealer (every second or so, in the API process) chains the
-- rows that can no longer change: those written by transactions older than
-- every running one (xid below the snapshot's xmin), in (xid, id) order.
-- mac(n) = HMAC-SHA256(chain key of the current master key version,
--                      mac(n-1) || canonical bytes of row n)
-- Without the master key, an edited or deleted row cannot be re-chained.
-- ---------------------------------------------------------------------------
CREATE FUNCTION otobot.audit_row_bytes(p_entry otobot.credential_access_logs, p_seq bigint)
    RETURNS bytea
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = ''
AS $$
    SELECT pg_catalog.convert_to(pg_catalog.jsonb_build_array(
        p_seq, p_entry.id, p_entry.xid::text, p_entry.client_connection_id, p_entry.user_id,
        p_entry.client_id, p_entry.service_code, p_entry.source, p_entry.action,
        p_entry.request_id, p_entry.db_role, p_entry.detail,
        -- epoch microseconds: independent of the session's TimeZone
        (pg_catalog.date_part('epoch', p_entry.created_at)::numeric * 1000000)::bigint)::text, 'UTF8')
$$;
COMMENT ON FUNCTION otobot.audit_row_bytes(otobot.credential_access_logs, bigint) IS
    'Canonical bytes of an audit row at a chain position, as MACed by the sealer.';

CREATE FUNCTION otobot.seal_audit_chain(p_max_rows integer DEFAULT 10000)
    RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    h      otobot.audit_chain_head;
    v_kv   integer;
    v_xmin xid8;
    r      record;
    n      integer := 0;
BEGIN
    IF p_max_rows IS NULL OR p_max_rows NOT BETWEEN 1 AND 1000000 THEN
        RAISE EXCEPTION 'otobot: p_max_rows must be between 1 and 1000000' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM otobot.begin_scope('system', NULL, NULL, 'sealer', NULL);
    -- SECURITY: fail closed: without the key, nothing is sealed.
    v_kv := otobot.otobot_current_key_version();
    -- One sealer at a time; readers never take this lock.
    SELECT * INTO h FROM otobot.audit_chain_head FOR UPDATE;
    v_xmin := pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot());
    FOR r IN
        SELECT l AS entry, l.id, l.xid
        FROM otobot.credential_access_logs l
        WHERE (l.xid, l.id) > (h.cursor_xid, h.cursor_id) AND l.xid < v_xmin
        ORDER BY l.xid, l.id
        LIMIT p_max_rows
    LOOP
        h.last_seq := h.last_seq + 1;
        h.last_mac := otobot.otobot_audit_mac(v_kv, h.last_mac || otobot.audit_row_bytes(r.entry, h.last_seq));
        INSERT INTO otobot.audit_chain (seq, log_id, key_version, mac) VALUES (h.last_seq, r.id, v_kv, h.last_mac);
        h.cursor_xid := r.xid;
        h.cursor_id := r.id;
        n := n + 1;
    END LOOP;
    IF n > 0 THEN
        UPDATE otobot.audit_chain_head
        SET last_seq = h.last_seq, last_mac = h.last_mac, cursor_xid = h.cursor_xid,
            cursor_id = h.cursor_id, sealed_at = pg_catalog.now();
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION otobot.seal_audit_chain(integer) IS
    'Chains up to p_max_rows settled audit rows; returns how many. Needs the keyring.';

CREATE FUNCTION otobot.verify_audit_chain()
    RETURNS TABLE (ok boolean, checked bigint, broken_seq bigint, broken_log_id bigint, problem text)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    h        otobot.audit_chain_head;
    r        record;
    v_prev   bytea := '\x';
    v_expect bigint := 1;
    v_stray  bigint;
BEGIN
    PERFORM otobot.begin_scope('system', NULL, NULL, 'audit', NULL);
    SELECT * INTO h FROM otobot.audit_chain_head;
    checked := 0;
    FOR r IN
        SELECT c.seq, c.log_id, c.key_version, c.mac, l AS entry, l.id IS NOT NULL AS present
        FROM otobot.audit_chain c
        LEFT JOIN otobot.credential_access_logs l ON l.id = c.log_id
        ORDER BY c.seq
    LOOP
        IF r.seq <> v_expect THEN
            RETURN QUERY SELECT false, checked, v_expect, NULL::bigint,
                pg_catalog.format('chain link %s is missing: sealed entries were removed', v_expect);
            RETURN;
        END IF;
        IF NOT r.present THEN
            RETURN QUERY SELECT false, checked, r.seq, r.log_id,
                pg_catalog.format('audit row %s (link %s) was deleted', r.log_id, r.seq);
            RETURN;
        END IF;
        IF otobot.otobot_audit_mac(r.key_version, v_prev || otobot.audit_row_bytes(r.entry, r.seq)) <> r.mac THEN
            RETURN QUERY SELECT false, checked, r.seq, r.log_id,
                pg_catalog.format('audit row %s (link %s) was altered, or the chain was rewritten without the key',
                                  r.log_id, r.seq);
            RETURN;
        END IF;
        v_prev := r.mac;
        v_expect := r.seq + 1;
        checked := checked + 1;
    END LOOP;
    IF h.last_seq <> checked OR h.last_mac <> v_prev THEN
        RETURN QUERY SELECT false, checked, checked + 1, NULL::bigint,
            pg_catalog.format('the chain ends at link %s but the sealer stopped at link %s: the newest links were removed',
                              checked, h.last_seq);
        RETURN;
    END IF;
    SELECT l.id INTO v_stray
    FROM otobot.credential_access_logs l
    WHERE (l.xid, l.id) <= (h.cursor_xid, h.cursor_id)
      AND NOT EXISTS (SELECT 1 FROM otobot.audit_chain c WHERE c.log_id = l.id)
    ORDER BY l.id
    LIMIT 1;
    IF FOUND THEN
        RETURN QUERY SELECT false, checked, NULL::bigint, v_stray,
            pg_catalog.format('audit row %s lies behind the sealer but is not chained: it was inserted out of band', v_stray);
        RETURN;
    END IF;
    RETURN QUERY SELECT true, checked, NULL::bigint, NULL::bigint, NULL::text;
END
$$;
COMMENT ON FUNCTION otobot.verify_audit_chain() IS
    'Recomputes the keyed audit chain; reports the first broken link (deleted, altered or forged row). Needs the keyring.';

CREATE FUNCTION otobot.audit_seal_lag()
    RETURNS TABLE (unsealed_rows bigint, oldest_unsealed_age interval, last_sealed_at timestamptz)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    h otobot.audit_chain_head;
BEGIN
    PERFORM otobot.begin_scope('system', NULL, NULL, 'audit', NULL);
    SELECT * INTO h FROM otobot.audit_chain_head;
    RETURN QUERY
        SELECT pg_catalog.count(*), pg_catalog.now() - pg_catalog.min(l.created_at), h.sealed_at
        FROM otobot.credential_access_logs l
        WHERE (l.xid, l.id) > (h.cursor_xid, h.cursor_id);
END
$$;
COMMENT ON FUNCTION otobot.audit_seal_lag() IS 'How many audit rows wait for the sealer, and for how long (for doctor).';

REVOKE EXECUTE ON FUNCTION
    otobot.begin_scope(text, uuid, uuid, text, text),
    otobot.write_audit(text, uuid, uuid, uuid, text, jsonb),
    otobot.audit_connection_change(),
    otobot.audit_row_bytes(otobot.credential_access_logs, bigint),
    otobot.seal_audit_chain(integer),
    otobot.verify_audit_chain(),
    otobot.audit_seal_lag()
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION otobot.seal_audit_chain(integer) TO otobot_api, otobot_dba;
GRANT EXECUTE ON FUNCTION otobot.verify_audit_chain(), otobot.audit_seal_lag()
    TO otobot_api, otobot_auditor, otobot_dba;
