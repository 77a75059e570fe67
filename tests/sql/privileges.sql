-- Every privilege of every role, pinned.

-- otobot_api reaches data only through functions.
SET ROLE otobot_api;
SELECT test.expect_error('SELECT * FROM otobot.client_connections', '42501');
SELECT test.expect_error('SELECT encrypted_access_token FROM otobot.client_connections', '42501');
SELECT test.expect_error('SELECT * FROM otobot.users', '42501');
SELECT test.expect_error('SELECT password_hash FROM otobot.clients', '42501');
SELECT test.expect_error('SELECT * FROM otobot.credential_access_logs', '42501');
SELECT test.expect_error('SELECT * FROM otobot.key_versions', '42501');
SELECT test.expect_error($$INSERT INTO otobot.credential_access_logs (source, action) VALUES ('n8n', 'credential_read')$$, '42501');
SELECT test.expect_error($$INSERT INTO otobot.audit_chain (seq, log_id, key_version, mac) VALUES (1, 1, 1, '\x00')$$, '42501');
SELECT test.expect_error($$SELECT otobot.otobot_decrypt('1:00:00:', 'x')$$, '42501');
SELECT test.expect_error($$SELECT otobot.otobot_encrypt('x', 'x')$$, '42501');
SELECT test.expect_error($$SELECT otobot.otobot_audit_mac(1, '\x00')$$, '42501');
SELECT test.expect_error($$SELECT otobot.reveal_credential(gen_random_uuid(), 'a long enough reason')$$, '42501');
SELECT test.expect_error($$SELECT otobot.store_connection('oauth2', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'x', NULL)$$, '42501');
SELECT test.expect_error($$SELECT otobot.begin_scope('system', NULL, NULL, 'x', NULL)$$, '42501');
RESET ROLE;

-- The auditor reads metadata and the log, never ciphertext or password hashes.
SET ROLE otobot_auditor;
SELECT count(*) FROM otobot.credential_access_logs;
SELECT id, user_id, status, token_expires_at FROM otobot.client_connections;
SELECT id, email, role FROM otobot.users;
SELECT test.expect_error('SELECT encrypted_access_token FROM otobot.client_connections', '42501');
SELECT test.expect_error('SELECT encrypted_refresh_token FROM otobot.client_connections', '42501');
SELECT test.expect_error('SELECT password_hash FROM otobot.users', '42501');
SELECT test.expect_error('SELECT password_hash FROM otobot.clients', '42501');
SELECT test.expect_error($$DELETE FROM otobot.credential_access_logs$$, '42501');
SELECT test.expect_error($$SELECT otobot.reveal_credential(gen_random_uuid(), 'a long enough reason')$$, '42501');
RESET ROLE;

-- The DBA reveals only through the audited function.
SET ROLE otobot_dba;
SELECT test.expect_error('SELECT encrypted_access_token FROM otobot.client_connections', '42501');
RESET ROLE;

DO $$
DECLARE
    v_bad text;
BEGIN
    -- Nothing in the schema is executable by PUBLIC.
    SELECT string_agg(p.oid::regprocedure::text, ', ') INTO v_bad
    FROM pg_proc p
    WHERE p.pronamespace = 'otobot'::regnamespace
      AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0));
    ASSERT v_bad IS NULL, 'executable by PUBLIC: ' || v_bad;

    -- Every SECURITY DEFINER function pins its search path; ours are owned by otobot_owner.
    SELECT string_agg(p.oid::regprocedure::text, ', ') INTO v_bad
    FROM pg_proc p
    WHERE p.pronamespace = 'otobot'::regnamespace AND p.prosecdef
      AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%');
    ASSERT v_bad IS NULL, 'SECURITY DEFINER without a pinned search_path: ' || v_bad;
    SELECT string_agg(p.oid::regprocedure::text, ', ') INTO v_bad
    FROM pg_proc p
    WHERE p.pronamespace = 'otobot'::regnamespace AND p.prosecdef
      AND p.proname NOT LIKE 'otobot\_%'
      AND p.proowner <> 'otobot_owner'::regrole;
    ASSERT v_bad IS NULL, 'SECURITY DEFINER not owned by otobot_owner: ' || v_bad;

    -- Tables with secrets: no role but the owner holds any privilege on the ciphertext columns.
    ASSERT NOT has_column_privilege('otobot_api', 'otobot.client_connections', 'encrypted_access_token', 'SELECT');
    ASSERT NOT has_column_privilege('otobot_auditor', 'otobot.client_connections', 'encrypted_access_token', 'SELECT');
    ASSERT NOT has_column_privilege('otobot_dba', 'otobot.client_connections', 'encrypted_refresh_token', 'SELECT');
    ASSERT NOT has_table_privilege('otobot_api', 'otobot.credential_access_logs', 'INSERT');

    -- Row-level security is enabled and forced on every tenant table.
    SELECT string_agg(c.relname, ', ') INTO v_bad
    FROM pg_class c
    WHERE c.oid IN ('otobot.clients'::regclass, 'otobot.users'::regclass,
                    'otobot.client_connections'::regclass, 'otobot.credential_access_logs'::regclass)
      AND NOT (c.relrowsecurity AND c.relforcerowsecurity);
    ASSERT v_bad IS NULL, 'RLS not enabled and forced: ' || v_bad;

    -- Every table and function of ours is documented.
    SELECT string_agg(c.relname, ', ') INTO v_bad
    FROM pg_class c
    WHERE c.relnamespace = 'otobot'::regnamespace AND c.relkind = 'r' AND obj_description(c.oid, 'pg_class') IS NULL;
    ASSERT v_bad IS NULL, 'tables without COMMENT: ' || v_bad;
    SELECT string_agg(p.oid::regprocedure::text, ', ') INTO v_bad
    FROM pg_proc p
    WHERE p.pronamespace = 'otobot'::regnamespace AND p.proowner = 'otobot_owner'::regrole
      AND obj_description(p.oid, 'pg_proc') IS NULL;
    ASSERT v_bad IS NULL, 'functions without COMMENT: ' || v_bad;

    -- The API role never logs its statements or their parameters.
    ASSERT EXISTS (SELECT 1 FROM pg_db_role_setting s
                   WHERE s.setrole = 'otobot_api'::regrole AND 'log_statement=none' = ANY (s.setconfig));
    ASSERT NOT (SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = 'otobot_owner');

    -- 0008: key registration is the owner's; sealing is the API's and the DBA's;
    -- verification against a checkpoint is everyone's who verifies; the horizon is internal.
    ASSERT has_function_privilege('otobot_owner', 'otobot.otobot_register_key(integer, bytea)', 'EXECUTE');
    ASSERT NOT has_function_privilege('otobot_api', 'otobot.otobot_register_key(integer, bytea)', 'EXECUTE');
    ASSERT NOT has_function_privilege('otobot_dba', 'otobot.otobot_register_key(integer, bytea)', 'EXECUTE');
    ASSERT NOT has_function_privilege('otobot_auditor', 'otobot.otobot_register_key(integer, bytea)', 'EXECUTE');
    ASSERT has_function_privilege('otobot_api', 'otobot.seal_audit(integer)', 'EXECUTE');
    ASSERT has_function_privilege('otobot_dba', 'otobot.seal_audit(integer)', 'EXECUTE');
    ASSERT NOT has_function_privilege('otobot_auditor', 'otobot.seal_audit(integer)', 'EXECUTE');
    ASSERT has_function_privilege('otobot_auditor', 'otobot.verify_audit_chain(bigint, bytea)', 'EXECUTE');
    ASSERT has_function_privilege('otobot_api', 'otobot.verify_audit_chain(bigint, bytea)', 'EXECUTE');
    ASSERT NOT has_function_privilege('otobot_api', 'otobot.audit_seal_horizon()', 'EXECUTE');
    -- 0008: the session state is settable by otobot_owner alone.
    SELECT string_agg(p.parname || ' ' || a.grantee::regrole::text, ', ') INTO v_bad
    FROM pg_parameter_acl p CROSS JOIN LATERAL aclexplode(p.paracl) a
    WHERE p.parname LIKE 'otobot.%' AND a.privilege_type = 'SET'
      AND a.grantee <> 'otobot_owner'::regrole AND NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.oid = a.grantee);
    ASSERT v_bad IS NULL, 'SET on otobot.* granted beyond otobot_owner: ' || v_bad;
    ASSERT (SELECT count(*) FROM pg_parameter_acl p, aclexplode(p.paracl) a
            WHERE p.parname LIKE 'otobot.%' AND a.grantee = 'otobot_owner'::regrole AND a.privilege_type = 'SET') = 7,
        'otobot_owner sets the seven otobot.* settings';
END
$$;
