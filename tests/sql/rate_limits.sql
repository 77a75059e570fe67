-- Rate limit state (0013): only otobot_api reaches it, only through its
-- functions; a reservation counts for the account and the address together,
-- a refund gives it back, and a full budget names the limit and the wait.

-- No role reads or writes the tables directly.
SET ROLE otobot_api;
SELECT test.expect_error('SELECT * FROM otobot.login_attempts', '42501');
SELECT test.expect_error('SELECT * FROM otobot.rate_limit_counts', '42501');
SELECT test.expect_error($$DELETE FROM otobot.login_attempts$$, '42501');
SELECT test.expect_error($$INSERT INTO otobot.rate_limit_counts VALUES ('c:x', 0, 'r', 1)$$, '42501');
RESET ROLE;
SET ROLE otobot_auditor;
SELECT test.expect_error($$SELECT * FROM otobot.reserve_login_attempt('a', '1.2.3.4', 10, 100, 900)$$, '42501');
SELECT test.expect_error($$SELECT otobot.refund_login_attempt('a', '1.2.3.4', 0)$$, '42501');
SELECT test.expect_error($$SELECT * FROM otobot.rate_limit_exchange('r', 60, '{}', '{}', '{}')$$, '42501');
RESET ROLE;
SET ROLE otobot_dba;
SELECT test.expect_error($$SELECT * FROM otobot.reserve_login_attempt('a', '1.2.3.4', 10, 100, 900)$$, '42501');
SELECT test.expect_error($$SELECT * FROM otobot.rate_limit_exchange('r', 60, '{}', '{}', '{}')$$, '42501');
RESET ROLE;

SET ROLE otobot_api;
-- Arguments out of range are refused.
SELECT test.expect_error($$SELECT * FROM otobot.reserve_login_attempt('a', '1.2.3.4', 0, 100, 900)$$, '22023');
SELECT test.expect_error($$SELECT * FROM otobot.reserve_login_attempt('a', '1.2.3.4', 10, 100, 0)$$, '22023');
SELECT test.expect_error($$SELECT * FROM otobot.rate_limit_exchange('r', 60, '{a}', '{}', '{}')$$, '22023');

DO $$
DECLARE
    r record;
    i integer;
BEGIN
    -- Three attempts for account A from one address: the fourth is refused, naming the account.
    FOR i IN 1..3 LOOP
        r := otobot.reserve_login_attempt('acct-a', '203.0.113.1', 3, 5, 900);
        ASSERT r.retry_after = 0, 'attempt ' || i || ' refused';
    END LOOP;
    r := otobot.reserve_login_attempt('acct-a', '203.0.113.1', 3, 5, 900);
    ASSERT r.retry_after BETWEEN 1 AND 900 AND r.limit_hit = 'account', 'the 4th: ' || r::text;
    -- A refund (a right password) gives one back.
    PERFORM otobot.refund_login_attempt('acct-a', '203.0.113.1', r.window_start);
    r := otobot.reserve_login_attempt('acct-a', '203.0.113.1', 3, 5, 900);
    ASSERT r.retry_after = 0, 'after a refund: ' || r::text;
    -- The refused attempt counted nowhere: the address has 3 of its 5.
    r := otobot.reserve_login_attempt('acct-b', '203.0.113.1', 3, 5, 900);
    ASSERT r.retry_after = 0, 'the address''s 4th: ' || r::text;
    r := otobot.reserve_login_attempt('acct-c', '203.0.113.1', 3, 5, 900);
    ASSERT r.retry_after = 0, 'the address''s 5th: ' || r::text;
    r := otobot.reserve_login_attempt('acct-d', '203.0.113.1', 3, 5, 900);
    ASSERT r.retry_after > 0 AND r.limit_hit = 'address', 'the address''s 6th: ' || r::text;
    -- ...and the refused one did not count for account D either.
    FOR i IN 1..3 LOOP
        r := otobot.reserve_login_attempt('acct-d', '203.0.113.2', 3, 5, 900);
        ASSERT r.retry_after = 0, 'account D from elsewhere, ' || i || ': ' || r::text;
    END LOOP;

    -- Request counts: each replica sees the others', never its own.
    PERFORM otobot.rate_limit_exchange('r1', 60, ARRAY['c:n8n'],
        ARRAY[(floor(date_part('epoch', clock_timestamp()) / 60) * 60)::bigint], ARRAY[7::bigint]);
    SELECT * INTO r FROM otobot.rate_limit_exchange('r2', 60, '{}', '{}', '{}');
    ASSERT r.key = 'c:n8n' AND r.others = 7, 'r2 sees r1: ' || r::text;
    PERFORM 1 FROM otobot.rate_limit_exchange('r1', 60, '{}', '{}', '{}');
    ASSERT NOT FOUND, 'r1 sees only others';
    -- A count is absolute: sending it again does not add up.
    PERFORM otobot.rate_limit_exchange('r1', 60, ARRAY['c:n8n'],
        ARRAY[(floor(date_part('epoch', clock_timestamp()) / 60) * 60)::bigint], ARRAY[7::bigint]);
    SELECT * INTO r FROM otobot.rate_limit_exchange('r2', 60, '{}', '{}', '{}');
    ASSERT r.others = 7, 'resent: ' || r::text;
END
$$;
RESET ROLE;
