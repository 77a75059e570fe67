-- ============================================================================
-- 0008 — the vault's own promises, held against a hostile caller:
--   * session state is not an input: the otobot.* settings are superuser-only
--     (extension 0.2.0); only otobot_owner's functions may set them; every
--     scope change resets them; the library is loaded at session start;
--   * first registration of a key version only by an owner (otobot migrate);
--   * audit anchoring: the sealer's head is returned for publication outside
--     the database, verification checks a published checkpoint, and the
--     sealing horizon ignores other databases' transactions.
--
-- The first part runs as the superuser that runs `otobot migrate`.
-- ============================================================================

-- ---------------------------------------------------------------------------
-- Extension 0.2.0: superuser-only otobot.* settings (prefix reserved), key
-- registration (otobot_register_key), non-dumpable key-holding backends.
-- A fresh CREATE EXTENSION (0001) is already at 0.2.0: then this is a no-op.
-- ---------------------------------------------------------------------------
ALTER EXTENSION otobot UPDATE TO '0.2.0';
-- Make sure the library (and so the settings' definitions) is loaded here.
SELECT count(*) FROM otobot.otobot_keyring();

-- SECURITY: only otobot_owner (the owner of every SECURITY DEFINER function)
-- may set the session state; the API, auditor and DBA roles may not.
GRANT SET ON PARAMETER otobot.scope, otobot.user_id, otobot.client_id, otobot.source,
    otobot.request_id, otobot.token_change, otobot.reason TO otobot_owner;

-- SECURITY: trust on first use belongs to owners: `otobot migrate` (a
-- superuser) and rotate-key register key versions, the API only loads them.
GRANT EXECUTE ON FUNCTION otobot.otobot_register_key(integer, bytea) TO otobot_owner;

-- Every session of the vault database loads the library when it starts, so
-- the settings exist (superuser-only) before a caller's first statement.
-- A placeholder set before the library loads would be discarded anyway (the
-- extension's settings refuse it); this removes the window. Appends to what
-- the database already preloads. Owned by the migrating superuser, run by
-- this migration and by every `otobot migrate` (a restored database lacks
-- database-level settings).
CREATE FUNCTION otobot.ensure_session_preload() RETURNS boolean
    LANGUAGE plpgsql VOLATILE
    SET search_path = ''
AS $$
DECLARE
    v_current text;
    v_libs    text[];
BEGIN
    SELECT pg_catalog.substr(c, pg_catalog.length('session_preload_libraries=') + 1)
    INTO v_current
    FROM pg_catalog.pg_db_role_setting s
    CROSS JOIN LATERAL pg_catalog.unnest(s.setconfig) AS c
    WHERE s.setrole = 0
      AND s.setdatabase = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
      AND pg_catalog.starts_with(c, 'session_preload_libraries=');
    SELECT COALESCE(pg_catalog.array_agg(pg_catalog.btrim(l, ' "')) FILTER (WHERE pg_catalog.btrim(l, ' "') <> ''), '{}')
    INTO v_libs
    FROM pg_catalog.unnest(pg_catalog.string_to_array(COALESCE(v_current, ''), ',')) AS l;
    IF 'otobot' = ANY (v_libs) THEN
        RETURN false;
    END IF;
    v_libs := v_libs || 'otobot'::text;
    EXECUTE pg_catalog.format('ALTER DATABASE %I SET session_preload_libraries = %s',
        pg_catalog.current_database(),
        (SELECT pg_catalog.string_agg(pg_catalog.quote_literal(l), ', ') FROM pg_catalog.unnest(v_libs) AS l));
    RETURN true;
END
$$;
COMMENT ON FUNCTION otobot.ensure_session_preload() IS
    'Adds otobot to the vault database''s session_preload_libraries (superuser; run by otobot migrate). True when it changed.';
REVOKE ALL ON FUNCTION otobot.ensure_session_preload() FROM PUBLIC;
SELECT otobot.ensure_session_preload();

SET LOCAL ROLE otobot_owner;

-- ---------------------------------------------------------------------------
-- Every scope change resets the whole call context: a token-change action or
-- a reason set earlier in the same call never reaches a later change.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION otobot.begin_scope(p_kind text, p_user_id uuid, p_client_id uuid,
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
            pg_catalog.set_config('otobot.request_id', COALESCE(p_request_id, ''), true),
            pg_catalog.set_config('otobot.token_change', '', true),
            pg_catalog.set_config('otobot.reason', '', true);
END
$$;
COMMENT ON FUNCTION otobot.begin_scope(text, uuid, uuid, text, text) IS
    'Sets the scope (user/admin/system), caller source and request id for the rest of the calling function, '
    'and clears token_change and reason.';

-- ---------------------------------------------------------------------------
-- The sealing horizon, from this database's transactions only
--
-- A row may be chained once no transaction that could still insert a row
-- with a lower (xid, id) is running. Only a transaction connected to this
-- database can insert into its tables, so a long transaction elsewhere in
-- the cluster (n8n's database in the compose stack) no longer holds sealing
-- back. The horizon is the lowest of:
--   * the snapshot's xmax: xids from there on are running or not yet
--     assigned, and any xid assigned later is higher still;
--   * this transaction's own xid (its rows are not settled yet);
--   * every xid running at the snapshot (pg_snapshot_xip) unless it is known
--     to belong to another database: a backend of another database in
--     pg_stat_activity (a backend never changes database; backend_xid and
--     datid are visible to every role), or a prepared transaction of
--     another database. An xid found nowhere (it ended since the snapshot,
--     or the activity view is cached from earlier in this transaction) is
--     kept: the horizon errs towards waiting, never towards skipping.
-- Every xid below the horizon has ended before the snapshot or belongs to
-- another database, so no row can later appear below the sealer's cursor.
-- ---------------------------------------------------------------------------
CREATE FUNCTION otobot.audit_seal_horizon() RETURNS xid8
    LANGUAGE sql VOLATILE
AS $$
    WITH snap AS (SELECT pg_catalog.pg_current_snapshot() AS s)
    SELECT LEAST(
        pg_catalog.pg_snapshot_xmax(snap.s),
        pg_catalog.pg_current_xact_id_if_assigned(),
        (SELECT pg_catalog.min(x.xid)
         FROM pg_catalog.pg_snapshot_xip(snap.s) AS x(xid)
         WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a
                           WHERE a.backend_xid = pg_catalog.xid(x.xid)
                             AND a.datid <> (SELECT d.oid FROM pg_catalog.pg_database d
                                             WHERE d.datname = pg_catalog.current_database()))
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_xacts p
                           WHERE p.transaction = pg_catalog.xid(x.xid)
                             AND p.database <> pg_catalog.current_database())))
    FROM snap
$$;
COMMENT ON FUNCTION otobot.audit_seal_horizon() IS
    'Audit rows written by transactions below this xid are settled: every such transaction of this database has ended.';

-- ---------------------------------------------------------------------------
-- Sealing, returning what the sealer publishes outside the database
-- ---------------------------------------------------------------------------
CREATE FUNCTION otobot.seal_audit(p_max_rows integer DEFAULT 10000)
    RETURNS TABLE (sealed integer, head_seq bigint, head_mac bytea, head_key_version integer,
                   head_sealed_at timestamptz, unsealed_rows bigint, oldest_unsealed_seconds double precision)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    h         otobot.audit_chain_head;
    v_kv      integer;
    v_horizon xid8;
    r         record;
BEGIN
    IF p_max_rows IS NULL OR p_max_rows NOT BETWEEN 1 AND 1000000 THEN
        RAISE EXCEPTION 'otobot: p_max_rows must be between 1 and 1000000' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM otobot.begin_scope('system', NULL, NULL, 'sealer', NULL);
    -- SECURITY: fail closed: without the key, nothing is sealed.
    v_kv := otobot.otobot_current_key_version();
    -- One sealer at a time; readers never take this lock.
    SELECT * INTO h FROM otobot.audit_chain_head FOR UPDATE;
    v_horizon := otobot.audit_seal_horizon();
    sealed := 0;
    FOR r IN
        SELECT l AS entry, l.id, l.xid
        FROM otobot.credential_access_logs l
        WHERE (l.xid, l.id) > (h.cursor_xid, h.cursor_id) AND l.xid < v_horizon
        ORDER BY l.xid, l.id
        LIMIT p_max_rows
    LOOP
        h.last_seq := h.last_seq + 1;
        h.last_mac := otobot.otobot_audit_mac(v_kv, h.last_mac || otobot.audit_row_bytes(r.entry, h.last_seq));
        INSERT INTO otobot.audit_chain (seq, log_id, key_version, mac) VALUES (h.last_seq, r.id, v_kv, h.last_mac);
        h.cursor_xid := r.xid;
        h.cursor_id := r.id;
        sealed := sealed + 1;
    END LOOP;
    IF sealed > 0 THEN
        UPDATE otobot.audit_chain_head
        SET last_seq = h.last_seq, last_mac = h.last_mac, cursor_xid = h.cursor_xid,
            cursor_id = h.cursor_id, sealed_at = pg_catalog.now();
        h.sealed_at := pg_catalog.now();
    END IF;
    head_seq := h.last_seq;
    head_mac := CASE WHEN h.last_seq > 0 THEN h.last_mac END;
    head_key_version := (SELECT c.key_version FROM otobot.audit_chain c WHERE c.seq = h.last_seq);
    head_sealed_at := h.sealed_at;
    -- Bounded count: a stalled sealer must not make each pass slower.
    unsealed_rows := (SELECT pg_catalog.count(*) FROM
                          (SELECT 1 FROM otobot.credential_access_logs l
                           WHERE (l.xid, l.id) > (h.cursor_xid, h.cursor_id) LIMIT 1000000) w);
    -- The next row in chain order is the one sealing waits for.
    oldest_unsealed_seconds := COALESCE(
        (SELECT pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - l.created_at)
         FROM otobot.credential_access_logs l
         WHERE (l.xid, l.id) > (h.cursor_xid, h.cursor_id)
         ORDER BY l.xid, l.id LIMIT 1), 0);
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION otobot.seal_audit(integer) IS
    'Chains up to p_max_rows settled audit rows; returns how many, the chain head to publish outside the database '
    '(sequence, MAC, key version, time) and the lag (rows waiting, age of the next one). Needs the keyring.';

CREATE OR REPLACE FUNCTION otobot.seal_audit_chain(p_max_rows integer DEFAULT 10000)
    RETURNS integer
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
    SELECT s.sealed FROM otobot.seal_audit(p_max_rows) AS s
$$;
COMMENT ON FUNCTION otobot.seal_audit_chain(integer) IS
    'Chains up to p_max_rows settled audit rows; returns how many (see seal_audit). Needs the keyring.';

-- ---------------------------------------------------------------------------
-- Verification against a checkpoint published outside the database
-- ---------------------------------------------------------------------------
CREATE FUNCTION otobot.verify_audit_chain(p_expected_seq bigint, p_expected_mac bytea)
    RETURNS TABLE (ok boolean, checked bigint, broken_seq bigint, broken_log_id bigint, problem text)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    h          otobot.audit_chain_head;
    r          record;
    v_prev     bytea := pg_catalog.decode('', 'hex');
    v_expect   bigint := 1;
    v_stray    bigint;
    v_mac_at   bytea;
BEGIN
    IF (p_expected_seq IS NULL) <> (p_expected_mac IS NULL) OR p_expected_seq < 1 THEN
        RAISE EXCEPTION 'otobot: a checkpoint is a sequence number of 1 or more and its MAC'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
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
        IF r.seq = p_expected_seq THEN
            v_mac_at := r.mac;
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
    -- SECURITY: the head lives in the database, so whoever deletes the newest
    -- links can rewind it too; the checkpoint published outside cannot be.
    IF p_expected_seq IS NOT NULL AND checked < p_expected_seq THEN
        RETURN QUERY SELECT false, checked, checked + 1, NULL::bigint,
            pg_catalog.format('the chain ends at link %s but a checkpoint published link %s: sealed links were '
                              'removed and the chain head rewound', checked, p_expected_seq);
        RETURN;
    END IF;
    IF p_expected_seq IS NOT NULL AND v_mac_at IS DISTINCT FROM p_expected_mac THEN
        RETURN QUERY SELECT false, checked, p_expected_seq, NULL::bigint,
            pg_catalog.format('link %s does not match the published checkpoint: the chain was rewritten', p_expected_seq);
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
COMMENT ON FUNCTION otobot.verify_audit_chain(bigint, bytea) IS
    'Recomputes the keyed audit chain and checks it against a checkpoint published outside the database '
    '(link p_expected_seq must exist with MAC p_expected_mac); reports the first problem. Needs the keyring.';

CREATE OR REPLACE FUNCTION otobot.verify_audit_chain()
    RETURNS TABLE (ok boolean, checked bigint, broken_seq bigint, broken_log_id bigint, problem text)
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
    SELECT * FROM otobot.verify_audit_chain(NULL::bigint, NULL::bytea)
$$;
COMMENT ON FUNCTION otobot.verify_audit_chain() IS
    'Recomputes the keyed audit chain without a checkpoint (a truncated, rewound tail goes unseen: pass one). '
    'Needs the keyring.';

-- ---------------------------------------------------------------------------
-- Privileges
-- ---------------------------------------------------------------------------
REVOKE EXECUTE ON FUNCTION
    otobot.audit_seal_horizon(),
    otobot.seal_audit(integer),
    otobot.verify_audit_chain(bigint, bytea)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION otobot.seal_audit(integer) TO otobot_api, otobot_dba;
GRANT EXECUTE ON FUNCTION otobot.verify_audit_chain(bigint, bytea) TO otobot_api, otobot_auditor, otobot_dba;
