-- ============================================================================
-- 0013 — rate limits shared by every replica of the API.
--
-- Login: only failed attempts count, per account (a SHA-256 of the email)
-- and per client address, over a sliding window. An attempt is reserved
-- before the password is verified and refunded when it was right, so
-- concurrent guesses never exceed the budget, and successful logins (a whole
-- company behind one ToolJet address) consume nothing.
--
-- Requests: each replica counts in memory and exchanges its counts here
-- about once a second (rate_limit_exchange), so the limits hold across
-- replicas within that lag. Nothing here is a secret: counts, and keys made
-- of caller names, user ids and client addresses.
-- ============================================================================
SET LOCAL ROLE otobot_owner;

-- ---------------------------------------------------------------------------
-- Failed logins
-- ---------------------------------------------------------------------------
CREATE TABLE otobot.login_attempts (
    kind         text NOT NULL CHECK (kind IN ('account', 'address')),
    subject      text NOT NULL CHECK (pg_catalog.length(subject) BETWEEN 1 AND 128),
    window_start bigint NOT NULL,
    attempts     integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    PRIMARY KEY (kind, subject, window_start)
);
CREATE INDEX login_attempts_window_idx ON otobot.login_attempts (window_start);
COMMENT ON TABLE otobot.login_attempts IS
    'Failed (or in-flight) login attempts per account (SHA-256 of the email) or client address, per fixed window (Unix seconds); read as a sliding window.';
REVOKE ALL ON otobot.login_attempts FROM PUBLIC;

-- Reserves one attempt for this account and this address, or says how long
-- to wait. The sliding estimate is the previous window's count, weighted by
-- the part of it still inside the sliding window, plus the current one's.
-- Locks the account row, then the address row (one order everywhere).
CREATE FUNCTION otobot.reserve_login_attempt(
    p_account text, p_address text, p_max_account integer, p_max_address integer,
    p_window_seconds integer,
    OUT retry_after integer, OUT limit_hit text, OUT window_start bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_now     double precision := pg_catalog.date_part('epoch', pg_catalog.clock_timestamp());
    v_window  bigint;
    v_elapsed double precision;
    v_kind    text;
    v_subject text;
    v_max     integer;
    v_cur     integer;
    v_prev    integer;
    v_wait    double precision;
BEGIN
    IF p_window_seconds IS NULL OR p_window_seconds NOT BETWEEN 1 AND 86400
       OR p_max_account IS NULL OR p_max_account < 1 OR p_max_address IS NULL OR p_max_address < 1
       OR p_account IS NULL OR p_address IS NULL THEN
        RAISE EXCEPTION 'otobot: invalid login limit arguments' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_window := (pg_catalog.floor(v_now / p_window_seconds))::bigint * p_window_seconds;
    v_elapsed := v_now - v_window;
    window_start := v_window;
    retry_after := 0;
    FOR v_kind, v_subject, v_max IN
        VALUES ('account', p_account, p_max_account), ('address', p_address, p_max_address)
    LOOP
        INSERT INTO otobot.login_attempts AS a (kind, subject, window_start)
        VALUES (v_kind, v_subject, v_window) ON CONFLICT DO NOTHING;
        SELECT a.attempts INTO v_cur FROM otobot.login_attempts a
        WHERE a.kind = v_kind AND a.subject = v_subject AND a.window_start = v_window
        FOR UPDATE;
        SELECT a.attempts INTO v_prev FROM otobot.login_attempts a
        WHERE a.kind = v_kind AND a.subject = v_subject AND a.window_start = v_window - p_window_seconds;
        v_prev := COALESCE(v_prev, 0);
        IF v_prev * (1 - v_elapsed / p_window_seconds) + v_cur + 1 > v_max THEN
            IF v_cur + 1 > v_max OR v_prev = 0 THEN
                -- Full in this window alone: wait for the next one.
                v_wait := p_window_seconds - v_elapsed;
            ELSE
                -- Until enough of the previous window has slid out.
                v_wait := (1 - (v_max - v_cur - 1)::double precision / v_prev) * p_window_seconds - v_elapsed;
            END IF;
            retry_after := GREATEST(1, pg_catalog.ceil(v_wait)::integer);
            limit_hit := v_kind;
            RETURN;
        END IF;
    END LOOP;
    UPDATE otobot.login_attempts a SET attempts = a.attempts + 1
    WHERE a.window_start = v_window
      AND ((a.kind = 'account' AND a.subject = p_account) OR (a.kind = 'address' AND a.subject = p_address));
END
$$;
COMMENT ON FUNCTION otobot.reserve_login_attempt(text, text, integer, integer, integer) IS
    'Reserves a login attempt for an account and a client address (retry_after 0), or returns the seconds to wait and which limit was hit.';

-- Gives back a reservation: the password was right.
CREATE FUNCTION otobot.refund_login_attempt(p_account text, p_address text, p_window_start bigint)
    RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
    UPDATE otobot.login_attempts a SET attempts = GREATEST(a.attempts - 1, 0)
    WHERE a.window_start = p_window_start
      AND ((a.kind = 'account' AND a.subject = p_account) OR (a.kind = 'address' AND a.subject = p_address));
$$;
COMMENT ON FUNCTION otobot.refund_login_attempt(text, text, bigint) IS
    'Returns a reserved login attempt (the login succeeded): successful logins consume no budget.';

-- ---------------------------------------------------------------------------
-- Request counts, exchanged between replicas
-- ---------------------------------------------------------------------------
CREATE TABLE otobot.rate_limit_counts (
    key          text NOT NULL CHECK (pg_catalog.length(key) BETWEEN 1 AND 200),
    window_start bigint NOT NULL,
    replica      text NOT NULL CHECK (pg_catalog.length(replica) BETWEEN 1 AND 100),
    requests     bigint NOT NULL CHECK (requests >= 0),
    PRIMARY KEY (key, window_start, replica)
);
CREATE INDEX rate_limit_counts_window_idx ON otobot.rate_limit_counts (window_start);
COMMENT ON TABLE otobot.rate_limit_counts IS
    'Requests each API replica admitted per limit key and fixed window (Unix seconds); replicas read each other''s counts.';
REVOKE ALL ON otobot.rate_limit_counts FROM PUBLIC;

-- Records this replica's counts (absolute, so a repeated call is harmless),
-- forgets windows older than the previous one (of this window length), and
-- returns the other replicas' counts for the current and previous windows.
CREATE FUNCTION otobot.rate_limit_exchange(
    p_replica text, p_window_seconds integer, p_keys text[], p_windows bigint[], p_counts bigint[])
    RETURNS TABLE (key text, window_start bigint, others bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_now    bigint := pg_catalog.floor(pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()))::bigint;
    v_oldest bigint;
BEGIN
    IF p_window_seconds IS NULL OR p_window_seconds NOT BETWEEN 1 AND 3600 OR p_replica IS NULL
       OR pg_catalog.cardinality(p_keys) IS DISTINCT FROM pg_catalog.cardinality(p_windows)
       OR pg_catalog.cardinality(p_keys) IS DISTINCT FROM pg_catalog.cardinality(p_counts)
       OR pg_catalog.cardinality(p_keys) > 100000 THEN
        RAISE EXCEPTION 'otobot: invalid rate limit exchange' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_oldest := (v_now / p_window_seconds - 1) * p_window_seconds;
    INSERT INTO otobot.rate_limit_counts AS c (key, window_start, replica, requests)
    SELECT k, w, p_replica, n
    FROM ROWS FROM (pg_catalog.unnest(p_keys), pg_catalog.unnest(p_windows), pg_catalog.unnest(p_counts)) AS u(k, w, n)
    WHERE w >= v_oldest AND n > 0
    ON CONFLICT ON CONSTRAINT rate_limit_counts_pkey DO UPDATE SET requests = GREATEST(c.requests, excluded.requests);
    DELETE FROM otobot.rate_limit_counts c WHERE c.window_start < v_oldest;
    DELETE FROM otobot.login_attempts a WHERE a.window_start < v_now - 2 * 86400;
    RETURN QUERY
        SELECT c.key, c.window_start, pg_catalog.sum(c.requests)::bigint
        FROM otobot.rate_limit_counts c
        WHERE c.window_start >= v_oldest AND c.replica <> p_replica
        GROUP BY c.key, c.window_start;
END
$$;
COMMENT ON FUNCTION otobot.rate_limit_exchange(text, integer, text[], bigint[], bigint[]) IS
    'One replica''s request counts in, the other replicas'' counts (current and previous window) out; old windows deleted.';

-- Login attempt windows can be up to a day; they are deleted two days on.

-- ---------------------------------------------------------------------------
-- Privileges
-- ---------------------------------------------------------------------------
REVOKE EXECUTE ON FUNCTION
    otobot.reserve_login_attempt(text, text, integer, integer, integer),
    otobot.refund_login_attempt(text, text, bigint),
    otobot.rate_limit_exchange(text, integer, text[], bigint[], bigint[])
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    otobot.reserve_login_attempt(text, text, integer, integer, integer),
    otobot.refund_login_attempt(text, text, bigint),
    otobot.rate_limit_exchange(text, integer, text[], bigint[], bigint[])
TO otobot_api;
