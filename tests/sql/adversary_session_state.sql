-- Adversary: session state is not an input. As otobot_api (with the key
-- loaded), otobot_auditor and otobot_dba, every way to set an otobot.*
-- setting fails; state left in a session by someone else is reset at every
-- scope change; a token change and a deactivation are still audited, with the
-- real reason only.
--
-- The library is loaded in this session (_setup.sql registered a key); the
-- last part reconnects without it to try the settings before it loads.

-- ---------------------------------------------------------------------------
-- Every setting, every role, every way: permission denied.
-- ---------------------------------------------------------------------------
CREATE TEMP TABLE attempts (role name, statement text);
INSERT INTO attempts
SELECT r.role, format(f.form, s.name)
FROM unnest(ARRAY['otobot_api', 'otobot_auditor', 'otobot_dba']::name[]) AS r(role)
CROSS JOIN unnest(ARRAY['otobot.scope', 'otobot.user_id', 'otobot.client_id', 'otobot.source',
                        'otobot.request_id', 'otobot.token_change', 'otobot.reason']) AS s(name)
CROSS JOIN unnest(ARRAY[
    'SET %s = ''system''',
    'SET LOCAL %s = ''key_rotation''',
    'SET SESSION %s TO DEFAULT',
    'RESET %s',
    'SELECT set_config(%L, ''system'', false)',
    'SELECT set_config(%L, ''key_rotation'', true)']) AS f(form);
GRANT SELECT ON attempts TO PUBLIC;

SELECT test.load_keys();
DO $$
DECLARE
    a record;
    n integer := 0;
BEGIN
    FOR a IN SELECT * FROM attempts LOOP
        EXECUTE format('SET LOCAL ROLE %I', a.role);
        PERFORM test.expect_error(a.statement, '42501', 'permission denied to set parameter%');
        RESET ROLE;
        n := n + 1;
    END LOOP;
    ASSERT n = 3 * 7 * 6, 'every attempt was made: ' || n;
END
$$;

-- Role and database defaults: refused for the roles themselves (and, by the
-- extension's check, for a superuser too).
SET ROLE otobot_api;
SELECT test.expect_error($$ALTER ROLE otobot_api SET otobot.scope = 'system'$$, '42501', 'permission denied to set parameter%');
SELECT test.expect_error(format('ALTER ROLE otobot_api IN DATABASE %I SET otobot.token_change = %L',
                                current_database(), 'key_rotation'), '42501');
SELECT test.expect_error(format('ALTER DATABASE %I SET otobot.scope = %L', current_database(), 'system'), '42501');
RESET ROLE;
SET ROLE otobot_dba;
SELECT test.expect_error($$ALTER ROLE otobot_dba SET otobot.reason = 'spoofed'$$, '42501', 'permission denied to set parameter%');
RESET ROLE;
SELECT test.expect_error($$ALTER ROLE otobot_api SET otobot.scope = 'system'$$, '22023', 'invalid value for parameter "otobot.scope"%');
SELECT test.expect_error(format('ALTER DATABASE %I SET otobot.token_change = %L', current_database(), 'key_rotation'),
                         '22023', 'invalid value for parameter "otobot.token_change"%');
DO $$ BEGIN
    ASSERT NOT EXISTS (SELECT 1 FROM pg_db_role_setting s, unnest(s.setconfig) c WHERE c LIKE 'otobot.%'),
        'no role or database default of an otobot.* setting exists';
END $$;

-- The prefix is reserved: no new otobot.* placeholder, for anyone.
SET ROLE otobot_api;
SELECT test.expect_error($$SET otobot.scope_override = 'system'$$, '42602', 'invalid configuration parameter name%');
SELECT test.expect_error($$SELECT set_config('otobot.grant_id', 'x', true)$$, '42602');
RESET ROLE;

-- Nobody but otobot_owner holds SET on them, and nobody can hand it out.
SET ROLE otobot_dba;
SELECT test.expect_error($$GRANT SET ON PARAMETER otobot.scope TO otobot_api$$, '42501');
RESET ROLE;
DO $$
DECLARE
    r name;
    s text;
BEGIN
    FOREACH s IN ARRAY ARRAY['otobot.scope', 'otobot.user_id', 'otobot.client_id', 'otobot.source',
                             'otobot.request_id', 'otobot.token_change', 'otobot.reason'] LOOP
        ASSERT (SELECT context FROM pg_settings WHERE name = s) = 'superuser', s || ' is superuser-only';
        ASSERT has_parameter_privilege('otobot_owner', s, 'SET'), 'otobot_owner sets ' || s;
        FOREACH r IN ARRAY ARRAY['otobot_api', 'otobot_auditor', 'otobot_dba']::name[] LOOP
            ASSERT NOT has_parameter_privilege(r, s, 'SET'), r || ' must not set ' || s;
        END LOOP;
    END LOOP;
END
$$;

-- A setting that would skip the audit triggers: superuser-only.
SET ROLE otobot_api;
SELECT test.expect_error($$SET session_replication_role = replica$$, '42501');
RESET ROLE;

-- ---------------------------------------------------------------------------
-- State left in the session by someone else never reaches a vault call:
-- every scope change resets it. (A superuser may set it; we play that.)
-- ---------------------------------------------------------------------------
SET ROLE otobot_api;
SELECT otobot.store_oauth_connection('a0000000-0000-0000-0000-00000000000a', 'google', 'tok-a', 'ref-a',
    now() + interval '1 hour', '{email}', 'a@gmail.test', NULL, 'tooljet', NULL);
SELECT otobot.store_oauth_connection('b0000000-0000-0000-0000-00000000000b', 'google', 'tok-b', 'ref-b',
    now() + interval '1 hour', '{email}', 'b@gmail.test', NULL, 'tooljet', NULL);
RESET ROLE;

SET otobot.token_change = 'key_rotation';
SET otobot.reason = 'spoofed reason';
SET otobot.scope = 'system';
SET otobot.source = 'spoofed';
SET ROLE otobot_api;
DO $$
DECLARE
    v_before bigint;
    v_id     uuid;
    v_at     timestamptz;
    r        record;
BEGIN
    -- A token replaced with unchanged metadata: audited as what it is.
    SELECT id, updated_at INTO v_id, v_at FROM test.connection_of('a0000000-0000-0000-0000-00000000000a', 'google');
    v_before := test.audit_count('tokens_updated');
    PERFORM otobot.store_oauth_connection('a0000000-0000-0000-0000-00000000000a', 'google', 'tok-a2', NULL,
        (SELECT token_expires_at FROM test.connection_of('a0000000-0000-0000-0000-00000000000a', 'google')),
        '{email}', 'a@gmail.test', NULL, 'tooljet', 'req-swap');
    ASSERT test.audit_count('tokens_updated') = v_before + 1, 'a token change is audited despite otobot.token_change';
    SELECT * INTO r FROM test.last_audit();
    ASSERT r.action = 'tokens_updated' AND r.source = 'tooljet' AND r.request_id = 'req-swap',
        'audited with the caller''s own source: ' || r.action || ' ' || r.source;
    ASSERT r.detail->>'reason' IS NULL, 'no spoofed reason: ' || r.detail::text;
    ASSERT (SELECT updated_at FROM test.connection_of('a0000000-0000-0000-0000-00000000000a', 'google')) > v_at,
        'a token change moves updated_at';
    ASSERT otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'google', NULL, true)->'credentials'->>'accessToken' = 'tok-a2';

    -- A scope left at 'system' confines nothing more than any other call: user B sees only B.
    ASSERT otobot.get_user_credentials('b0000000-0000-0000-0000-00000000000b', 'google', NULL, true, v_id)->>'code' = 'connection_not_found',
        'user B must not read user A''s connection with a leftover system scope';
    ASSERT otobot.get_user_credentials('b0000000-0000-0000-0000-00000000000b', 'google', NULL, true)->'credentials'->>'accessToken' = 'tok-b';

    -- A deactivation without a reason records none; the spoofed one never appears.
    PERFORM otobot.deactivate_connection(v_id, 'a0000000-0000-0000-0000-00000000000a', 'tooljet', 'req-off');
    SELECT * INTO r FROM test.last_audit();
    ASSERT r.action = 'connection_deactivated' AND r.detail->>'reason' IS NULL AND r.source = 'tooljet',
        'deactivation audited without the spoofed reason: ' || r.detail::text;
    ASSERT NOT EXISTS (SELECT 1 FROM test.audit_rows() WHERE detail::text LIKE '%spoofed%' OR source = 'spoofed'),
        'nothing spoofed reached the audit log';
END
$$;
RESET ROLE;
RESET otobot.token_change;
RESET otobot.reason;
RESET otobot.scope;
RESET otobot.source;

-- Row security cannot be switched off to read around the policies: the call fails, nothing leaks.
SET ROLE otobot_api;
SET row_security = off;
SELECT test.expect_error($$SELECT otobot.get_user_credentials('b0000000-0000-0000-0000-00000000000b', 'google', NULL, true)$$,
                         '42501', '%row-level security%');
RESET row_security;
RESET ROLE;

-- ---------------------------------------------------------------------------
-- Before the library loads: a placeholder the caller sets is discarded with
-- a WARNING when the settings are defined, so a token change is still audited.
-- ---------------------------------------------------------------------------
\c -reuse-previous=on "options=-csession_preload_libraries="
DO $$ BEGIN
    ASSERT NOT EXISTS (SELECT 1 FROM pg_settings WHERE name LIKE 'otobot.%'), 'the library is not loaded yet';
END $$;
SET ROLE otobot_api;
SET otobot.token_change = 'key_rotation';
SET otobot.reason = 'spoofed before load';
SET otobot.scope = 'system';
SET otobot.made_up = 'x';
DO $$ BEGIN
    ASSERT current_setting('otobot.token_change') = 'key_rotation', 'a placeholder, for now';
END $$;
-- Loading a key loads the library: the placeholders are re-applied with
-- otobot_api's privileges, refused, and discarded.
SELECT test.load_keys();
DO $$
DECLARE
    v_before bigint;
    r        record;
BEGIN
    ASSERT current_setting('otobot.token_change') = '' AND current_setting('otobot.reason') = ''
        AND current_setting('otobot.scope') = '', 'placeholders set before the library loaded are discarded';
    ASSERT current_setting('otobot.made_up', true) IS NULL, 'a made-up otobot.* placeholder is removed';
    v_before := test.audit_count('tokens_updated');
    PERFORM otobot.store_oauth_connection('b0000000-0000-0000-0000-00000000000b', 'google', 'tok-b2', NULL,
        now() + interval '1 hour', '{email}', 'b@gmail.test', NULL, 'tooljet', 'req-after-load');
    ASSERT test.audit_count('tokens_updated') = v_before + 1, 'the token change is audited';
    SELECT * INTO r FROM test.last_audit();
    ASSERT r.request_id = 'req-after-load' AND r.detail->>'reason' IS NULL;
END
$$;
SELECT test.expect_error($$SET otobot.token_change = 'key_rotation'$$, '42501', 'permission denied to set parameter%');
RESET ROLE;
