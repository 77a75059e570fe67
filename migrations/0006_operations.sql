-- ============================================================================
-- 0006 — operations: online key rotation, key retirement, secret
-- verification (doctor, verify-backup)
--
-- Rotation re-encrypts stored secrets to the session's current key version
-- in short batches claimed with FOR UPDATE SKIP LOCKED: readers never wait
-- (they take no row lock), writers wait at most one batch. A re-encryption
-- is not a change of the connection: it neither touches updated_at nor
-- writes a per-row audit row; each batch writes one audit row instead.
-- ============================================================================
SET LOCAL ROLE otobot_owner;

-- ---------------------------------------------------------------------------
-- Per-row triggers skip a pure re-encryption
--
-- A row is a pure re-encryption when the transaction-local setting
-- otobot.token_change is 'key_rotation' (only rotate_batch sets it) and no
-- column but the two ciphertexts changed. The test sits in the triggers'
-- WHEN clause, so a rotated row costs no trigger call and no queued event.
-- SECURITY: any other change in the same transaction is still audited.
-- ---------------------------------------------------------------------------
DROP TRIGGER client_connections_touch ON otobot.client_connections;
DROP TRIGGER client_connections_audit ON otobot.client_connections;

CREATE TRIGGER client_connections_touch BEFORE UPDATE ON otobot.client_connections
    FOR EACH ROW
    WHEN (pg_catalog.current_setting('otobot.token_change', true) IS DISTINCT FROM 'key_rotation'
          OR (OLD.id, OLD.client_id, OLD.user_id, OLD.service_id, OLD.credential_type, OLD.label,
              OLD.account_identifier, OLD.token_expires_at, OLD.scopes, OLD.status, OLD.is_active,
              OLD.last_refreshed_at, OLD.created_at, OLD.updated_at)
             IS DISTINCT FROM
             (NEW.id, NEW.client_id, NEW.user_id, NEW.service_id, NEW.credential_type, NEW.label,
              NEW.account_identifier, NEW.token_expires_at, NEW.scopes, NEW.status, NEW.is_active,
              NEW.last_refreshed_at, NEW.created_at, NEW.updated_at))
    EXECUTE FUNCTION otobot.touch_updated_at();

CREATE TRIGGER client_connections_audit_insert AFTER INSERT ON otobot.client_connections
    FOR EACH ROW EXECUTE FUNCTION otobot.audit_connection_change();

CREATE TRIGGER client_connections_audit AFTER UPDATE ON otobot.client_connections
    FOR EACH ROW
    WHEN (pg_catalog.current_setting('otobot.token_change', true) IS DISTINCT FROM 'key_rotation'
          OR (OLD.id, OLD.client_id, OLD.user_id, OLD.service_id, OLD.credential_type, OLD.label,
              OLD.account_identifier, OLD.token_expires_at, OLD.scopes, OLD.status, OLD.is_active,
              OLD.last_refreshed_at, OLD.created_at, OLD.updated_at)
             IS DISTINCT FROM
             (NEW.id, NEW.client_id, NEW.user_id, NEW.service_id, NEW.credential_type, NEW.label,
              NEW.account_identifier, NEW.token_expires_at, NEW.scopes, NEW.status, NEW.is_active,
              NEW.last_refreshed_at, NEW.created_at, NEW.updated_at))
    EXECUTE FUNCTION otobot.audit_connection_change();

COMMENT ON TRIGGER client_connections_touch ON otobot.client_connections IS
    'Keeps updated_at current, except for a pure re-encryption by key rotation.';
COMMENT ON TRIGGER client_connections_audit_insert ON otobot.client_connections IS
    'Audits every created connection.';
COMMENT ON TRIGGER client_connections_audit ON otobot.client_connections IS
    'Audits every changed connection, except a pure re-encryption by key rotation (audited once per batch).';

-- Room on each page for a row's next version: a re-encryption (or a token
-- refresh) then updates the row in place (HOT), without touching its four
-- indexes. Applies to pages written from now on.
ALTER TABLE otobot.client_connections SET (fillfactor = 80);

-- ---------------------------------------------------------------------------
-- Key versions in use
-- ---------------------------------------------------------------------------
CREATE FUNCTION otobot.key_version_counts()
    RETURNS TABLE (key_version integer, connections bigint, access_tokens bigint, refresh_tokens bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    PERFORM otobot.begin_scope('system', NULL, NULL, 'ops', NULL);
    RETURN QUERY
        SELECT v.version,
               pg_catalog.count(DISTINCT c.id),
               pg_catalog.count(*) FILTER (WHERE v.is_access),
               pg_catalog.count(*) FILTER (WHERE NOT v.is_access)
        FROM otobot.client_connections c
        CROSS JOIN LATERAL (VALUES
            (otobot.otobot_key_version(c.encrypted_access_token), true),
            (otobot.otobot_key_version(c.encrypted_refresh_token), false)) AS v(version, is_access)
        WHERE v.version IS NOT NULL
        GROUP BY v.version
        ORDER BY v.version;
END
$$;
COMMENT ON FUNCTION otobot.key_version_counts() IS
    'How many stored secrets each key version encrypts (connections, access tokens, refresh tokens). Needs no key.';

-- ---------------------------------------------------------------------------
-- Rotation
-- ---------------------------------------------------------------------------
CREATE FUNCTION otobot.rotate_batch(
    p_limit integer,
    p_from uuid DEFAULT '00000000-0000-0000-0000-000000000000',
    p_to uuid DEFAULT 'ffffffff-ffff-ffff-ffff-ffffffffffff',
    p_source text DEFAULT 'cli',
    p_request_id text DEFAULT NULL)
    RETURNS TABLE (rotated integer, last_id uuid)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
    -- The row-level security predicates make the planner believe few rows
    -- are visible, so it would sort the whole table to find the next window;
    -- the primary-key order is always the right plan here. A batch is
    -- small: compiling it (JIT) costs more than it saves.
    SET enable_sort = off
    SET jit = off
AS $$
DECLARE
    v_kv       integer;
    v_window   uuid[];
    v_ids      uuid[];
    v_versions integer[];
    v_from     jsonb;
BEGIN
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'otobot: p_limit must be between 1 and 100000' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_from IS NULL OR p_to IS NULL THEN
        RAISE EXCEPTION 'otobot: p_from and p_to are required' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM otobot.begin_scope('system', NULL, NULL, p_source, p_request_id);
    -- SECURITY: fails closed without a keyring.
    v_kv := otobot.otobot_current_key_version();
    PERFORM pg_catalog.set_config('otobot.token_change', 'key_rotation', true);

    -- A window of the next p_limit ids from p_from, in primary-key order
    -- (an index range scan, whatever the planner thinks of the filters
    -- below): the caller resumes after last_id, so a pass reads each row
    -- once. In the window, the rows not yet under v_kv are claimed; rows
    -- locked by a writer are skipped, never waited for: a later pass takes
    -- them.
    SELECT pg_catalog.array_agg(w.id ORDER BY w.id)
    INTO v_window
    FROM (SELECT c.id FROM otobot.client_connections c
          WHERE c.id >= p_from AND c.id <= p_to
          ORDER BY c.id
          LIMIT p_limit) w;
    IF v_window IS NULL THEN
        rotated := 0;
        RETURN NEXT;
        RETURN;
    END IF;
    last_id := v_window[pg_catalog.cardinality(v_window)];

    SELECT pg_catalog.array_agg(s.id),
           pg_catalog.array_agg(s.access_version) || pg_catalog.array_agg(s.refresh_version)
    INTO v_ids, v_versions
    FROM (SELECT c.id,
                 otobot.otobot_key_version(c.encrypted_access_token) AS access_version,
                 otobot.otobot_key_version(c.encrypted_refresh_token) AS refresh_version
          FROM otobot.client_connections c
          WHERE c.id = ANY (v_window)
            AND (otobot.otobot_key_version(c.encrypted_access_token) <> v_kv
                 OR otobot.otobot_key_version(c.encrypted_refresh_token) <> v_kv)
          FOR UPDATE SKIP LOCKED) s;
    rotated := COALESCE(pg_catalog.cardinality(v_ids), 0);
    IF rotated = 0 THEN
        RETURN NEXT;
        RETURN;
    END IF;

    -- Same associated data: the value stays bound to its row and column.
    UPDATE otobot.client_connections c
    SET encrypted_access_token = CASE
            WHEN otobot.otobot_key_version(c.encrypted_access_token) = v_kv THEN c.encrypted_access_token
            ELSE otobot.otobot_reencrypt(c.encrypted_access_token, c.id::text || ':encrypted_access_token') END,
        encrypted_refresh_token = CASE
            WHEN c.encrypted_refresh_token IS NULL
              OR otobot.otobot_key_version(c.encrypted_refresh_token) = v_kv THEN c.encrypted_refresh_token
            ELSE otobot.otobot_reencrypt(c.encrypted_refresh_token, c.id::text || ':encrypted_refresh_token') END
    WHERE c.id = ANY (v_ids);

    SELECT pg_catalog.jsonb_object_agg(x.version::text, x.n)
    INTO v_from
    FROM (SELECT v.version, pg_catalog.count(*) AS n
          FROM pg_catalog.unnest(v_versions) AS v(version)
          WHERE v.version IS NOT NULL AND v.version <> v_kv
          GROUP BY v.version) x;

    PERFORM pg_catalog.set_config('otobot.token_change', '', true);
    -- One audit row per batch, in the batch's transaction.
    PERFORM otobot.write_audit('key_rotation_batch', NULL, NULL, NULL, NULL,
        pg_catalog.jsonb_build_object('connections', rotated, 'to_version', v_kv,
                                      'secrets_by_old_version', v_from, 'last_id', last_id));
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION otobot.rotate_batch(integer, uuid, uuid, text, text) IS
    'Re-encrypts, among the next p_limit connections by id in [p_from, p_to], those not yet under the current '
    'key version (FOR UPDATE SKIP LOCKED, same associated data); one audit row per batch. Returns how many were '
    're-encrypted and the last id looked at (resume after it), NULL at the end of the range.';

-- ---------------------------------------------------------------------------
-- Retired key versions
-- ---------------------------------------------------------------------------
CREATE TABLE otobot.retired_key_versions (
    version    integer PRIMARY KEY CHECK (version >= 1),
    retired_at timestamptz NOT NULL DEFAULT now(),
    db_role    text NOT NULL DEFAULT session_user
);
COMMENT ON TABLE otobot.retired_key_versions IS
    'Key versions no stored secret uses any more; their keys may leave ENCRYPTION_OLD_KEYS. Never a key.';
REVOKE ALL ON otobot.retired_key_versions FROM PUBLIC;
GRANT SELECT ON otobot.retired_key_versions TO otobot_auditor, otobot_dba;

CREATE FUNCTION otobot.retire_key_version(p_version integer, p_source text DEFAULT 'cli',
                                          p_request_id text DEFAULT NULL)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_in_use      bigint;
    v_audit_links bigint;
BEGIN
    IF p_version IS NULL OR p_version < 1 THEN
        RAISE EXCEPTION 'otobot: key version must be 1 or more' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM otobot.begin_scope('system', NULL, NULL, p_source, p_request_id);
    -- Serialise with rotation batches and writers: nobody stores a value
    -- under this version while we count.
    LOCK TABLE otobot.client_connections IN SHARE MODE;
    SELECT pg_catalog.count(*) INTO v_in_use
    FROM otobot.client_connections c
    WHERE otobot.otobot_key_version(c.encrypted_access_token) = p_version
       OR otobot.otobot_key_version(c.encrypted_refresh_token) = p_version;
    IF v_in_use > 0 THEN
        RAISE EXCEPTION 'otobot: key version % still encrypts % connection(s): run otobot rotate-key first',
            p_version, v_in_use USING ERRCODE = 'object_in_use';
    END IF;
    SELECT pg_catalog.count(*) INTO v_audit_links FROM otobot.audit_chain a WHERE a.key_version = p_version;
    INSERT INTO otobot.retired_key_versions (version) VALUES (p_version)
    ON CONFLICT (version) DO NOTHING;
    PERFORM otobot.write_audit('key_retired', NULL, NULL, NULL, NULL,
        pg_catalog.jsonb_build_object('version', p_version, 'audit_links', v_audit_links));
    RETURN v_audit_links;
END
$$;
COMMENT ON FUNCTION otobot.retire_key_version(integer, text, text) IS
    'Records that no secret uses a key version any more (refuses otherwise); returns how many audit-chain '
    'links were sealed under it (verifying them still needs that key). Audited.';

-- ---------------------------------------------------------------------------
-- Every secret decrypts (doctor, verify-backup)
-- ---------------------------------------------------------------------------
CREATE FUNCTION otobot.verify_secrets(p_source text DEFAULT 'cli', p_request_id text DEFAULT NULL)
    RETURNS TABLE (checked bigint, failed bigint, first_failed_connection uuid)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    PERFORM otobot.begin_scope('system', NULL, NULL, p_source, p_request_id);
    PERFORM otobot.otobot_current_key_version();
    -- SECURITY: plaintexts are compared with NULL and dropped; none leaves.
    SELECT pg_catalog.count(*),
           pg_catalog.count(*) FILTER (WHERE NOT s.ok),
           (pg_catalog.array_agg(s.id ORDER BY s.id) FILTER (WHERE NOT s.ok))[1]
    INTO checked, failed, first_failed_connection
    FROM (SELECT c.id,
                 otobot.try_decrypt(c.encrypted_access_token, c.id::text || ':encrypted_access_token') IS NOT NULL
                 AND (c.encrypted_refresh_token IS NULL
                      OR otobot.try_decrypt(c.encrypted_refresh_token, c.id::text || ':encrypted_refresh_token') IS NOT NULL)
                 AS ok
          FROM otobot.client_connections c) s;
    PERFORM otobot.write_audit('secrets_verified', NULL, NULL, NULL, NULL,
        pg_catalog.jsonb_build_object('checked', checked, 'failed', failed));
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION otobot.verify_secrets(text, text) IS
    'Proves that every stored secret decrypts with the session''s keyring (no plaintext returned); audited.';

-- ---------------------------------------------------------------------------
-- Privileges
-- ---------------------------------------------------------------------------
REVOKE EXECUTE ON FUNCTION
    otobot.key_version_counts(),
    otobot.rotate_batch(integer, uuid, uuid, text, text),
    otobot.retire_key_version(integer, text, text),
    otobot.verify_secrets(text, text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    otobot.key_version_counts(),
    otobot.rotate_batch(integer, uuid, uuid, text, text),
    otobot.retire_key_version(integer, text, text),
    otobot.verify_secrets(text, text)
TO otobot_dba;
GRANT EXECUTE ON FUNCTION otobot.key_version_counts() TO otobot_auditor;
