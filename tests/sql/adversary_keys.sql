-- Adversary: key versions. Trust on first use belongs to owners: as
-- otobot_api (with the key loaded), otobot_auditor and otobot_dba, no role can
-- register a key version, overwrite a registered one, or load an unregistered
-- or wrong key; the check values are out of their reach.
DO $$
DECLARE
    r       name;
    stmt    text;
    v_other text := 'decode(repeat(''07'', 32), ''hex'')';
BEGIN
    FOREACH r IN ARRAY ARRAY['otobot_api', 'otobot_auditor', 'otobot_dba']::name[] LOOP
        EXECUTE format('SET LOCAL ROLE %I', r);
        PERFORM test.load_keys();
        ASSERT otobot.otobot_current_key_version() = 1, r || ' loads the registered key';
        FOREACH stmt IN ARRAY ARRAY[
            format('SELECT otobot.otobot_register_key(2, %s)', v_other),
            format('SELECT otobot.otobot_register_key(1, %s)', v_other),
            format('SELECT otobot.otobot_register_key(1, decode(repeat(''01'', 32), ''hex''))'),
            'SELECT * FROM otobot.key_versions',
            format('INSERT INTO otobot.key_versions (version, check_value) VALUES (2, %s)', v_other),
            format('UPDATE otobot.key_versions SET check_value = %s', v_other),
            'DELETE FROM otobot.key_versions']
        LOOP
            PERFORM test.expect_error(stmt, '42501');
        END LOOP;
        -- An unregistered version is refused, naming it and the remedy; nothing is recorded.
        PERFORM test.expect_error(format('SELECT otobot.otobot_load_key(2, %s, true)', v_other),
                                  '55000', 'otobot: key version 2 is not registered in this database: run `otobot migrate`%');
        -- A wrong key for the registered version is refused.
        PERFORM test.expect_error(format('SELECT otobot.otobot_load_key(1, %s, true)', v_other),
                                  '28000', '%key check failed for version 1%');
        ASSERT otobot.otobot_current_key_version() = 1, 'the good key stays loaded';
        PERFORM otobot.otobot_unload_keys();
        RESET ROLE;
    END LOOP;
    ASSERT (SELECT count(*) FROM otobot.key_versions) = 1, 'only the owner''s registration exists';
    ASSERT NOT EXISTS (SELECT 1 FROM otobot.key_versions WHERE version = 2);
END
$$;

-- Privileges, pinned.
DO $$
DECLARE r name;
BEGIN
    FOREACH r IN ARRAY ARRAY['otobot_api', 'otobot_auditor', 'otobot_dba']::name[] LOOP
        ASSERT NOT has_function_privilege(r, 'otobot.otobot_register_key(integer, bytea)', 'EXECUTE'), r || ' registers';
        ASSERT has_function_privilege(r, 'otobot.otobot_load_key(integer, bytea, boolean)', 'EXECUTE'), r || ' loads';
        ASSERT NOT has_table_privilege(r, 'otobot.key_versions', 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE');
    END LOOP;
    ASSERT has_function_privilege('otobot_owner', 'otobot.otobot_register_key(integer, bytea)', 'EXECUTE');
    -- No SECURITY DEFINER function of otobot_owner's calls it: the API cannot reach it through one.
    ASSERT NOT EXISTS (SELECT 1 FROM pg_proc p
                       WHERE p.pronamespace = 'otobot'::regnamespace AND p.proowner = 'otobot_owner'::regrole
                         AND p.prosrc LIKE '%otobot_register_key%'), 'no owner function registers keys';
END
$$;

-- The owner's registration: idempotent for the same key, refused for another.
DO $$ BEGIN
    ASSERT NOT otobot.otobot_register_key(1, decode(repeat('01', 32), 'hex')), 'already registered';
    PERFORM test.expect_error($q$SELECT otobot.otobot_register_key(1, decode(repeat('07', 32), 'hex'))$q$,
                              '28000', '%key check failed for version 1%');
    ASSERT otobot.otobot_register_key(2, decode(repeat('07', 32), 'hex')), 'a new version registers';
    ASSERT (SELECT registered_by FROM otobot.key_versions WHERE version = 2) = session_user;
END $$;

-- The API role then loads it, and a backend that holds keys is not dumpable
-- (the extension's #[pg_test] checks PR_GET_DUMPABLE).
SET ROLE otobot_api;
SELECT otobot.otobot_load_key(2, decode(repeat('07', 32), 'hex'), true);
DO $$ BEGIN
    ASSERT otobot.otobot_current_key_version() = 2;
END $$;
RESET ROLE;
