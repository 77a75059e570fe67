-- Test helpers and fixtures, loaded into each test database as a superuser
-- before the test file runs. Never part of a deployment.
SET client_min_messages = warning;
CREATE SCHEMA test;
GRANT USAGE ON SCHEMA test TO PUBLIC;

-- Run p_sql and require an error with this SQLSTATE (and message pattern).
CREATE FUNCTION test.expect_error(p_sql text, p_sqlstate text, p_message_like text DEFAULT '%')
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_state text;
    v_msg   text;
BEGIN
    BEGIN
        EXECUTE p_sql;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
    END;
    IF v_state IS NULL THEN
        RAISE EXCEPTION 'expected error % but it succeeded: %', p_sqlstate, p_sql;
    END IF;
    IF v_state <> p_sqlstate OR v_msg NOT LIKE p_message_like THEN
        RAISE EXCEPTION 'expected % "%", got % "%" from: %', p_sqlstate, p_message_like, v_state, v_msg, p_sql;
    END IF;
END
$$;

-- Key version 1 of the tests, registered as `otobot migrate` does (superuser).
SELECT otobot.otobot_register_key(1, decode(repeat('01', 32), 'hex'));

CREATE FUNCTION test.load_keys() RETURNS void LANGUAGE sql AS $$
    SELECT otobot.otobot_load_key(1, decode(repeat('01', 32), 'hex'), true)
$$;

-- What the tests read behind the roles' backs: SECURITY DEFINER, owned by the
-- superuser that loads this file, so a test running as otobot_api can check.
CREATE FUNCTION test.audit_count(p_action text DEFAULT NULL) RETURNS bigint LANGUAGE sql SECURITY DEFINER AS $$
    SELECT count(*) FROM otobot.credential_access_logs WHERE p_action IS NULL OR action = p_action
$$;

CREATE FUNCTION test.last_audit() RETURNS otobot.credential_access_logs LANGUAGE sql SECURITY DEFINER AS $$
    SELECT * FROM otobot.credential_access_logs ORDER BY id DESC LIMIT 1
$$;

CREATE FUNCTION test.audit_rows() RETURNS SETOF otobot.credential_access_logs LANGUAGE sql SECURITY DEFINER AS $$
    SELECT * FROM otobot.credential_access_logs ORDER BY id
$$;

-- The newest active connection of a user to a service.
CREATE FUNCTION test.connection_of(p_user uuid, p_service text) RETURNS otobot.client_connections
LANGUAGE sql SECURITY DEFINER AS $$
    SELECT c.* FROM otobot.client_connections c JOIN otobot.services s ON s.id = c.service_id
    WHERE c.user_id = p_user AND s.service_code = p_service AND c.is_active
    ORDER BY c.updated_at DESC LIMIT 1
$$;

-- Seal until nothing waits: a transaction of this database still running
-- holds sealing back, so wait for it (up to 30 s).
CREATE FUNCTION test.seal_all() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n bigint := 0;
BEGIN
    FOR i IN 1..300 LOOP
        n := n + otobot.seal_audit_chain();
        EXIT WHEN (SELECT unsealed_rows FROM otobot.audit_seal_lag()) = 0;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RETURN n;
END
$$;

GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA test TO PUBLIC;

-- Two clients. Client 1: users A and B and admin D. Client 2: user C.
INSERT INTO otobot.clients (id, email, company_name, password_hash) VALUES
    ('c1000000-0000-0000-0000-000000000001', 'one@example.test', 'Client One', 'x'),
    ('c2000000-0000-0000-0000-000000000002', 'two@example.test', 'Client Two', 'x');
INSERT INTO otobot.users (id, client_id, email, role) VALUES
    ('a0000000-0000-0000-0000-00000000000a', 'c1000000-0000-0000-0000-000000000001', 'a@example.test', 'user'),
    ('b0000000-0000-0000-0000-00000000000b', 'c1000000-0000-0000-0000-000000000001', 'b@example.test', 'user'),
    ('d0000000-0000-0000-0000-00000000000d', 'c1000000-0000-0000-0000-000000000001', 'd@example.test', 'admin'),
    ('c0000000-0000-0000-0000-00000000000c', 'c2000000-0000-0000-0000-000000000002', 'c@example.test', 'user');
RESET client_min_messages;
