-- The keyed chain: sealed off the hot path, verified, and tamper-evident.
SELECT test.load_keys();
SET ROLE otobot_api;
SELECT otobot.store_api_key('a0000000-0000-0000-0000-00000000000a', 'notion', 'secret_notion', NULL, NULL, 'test', NULL);
SELECT otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'notion', NULL, true, NULL, NULL, 'n8n', 'r' || g)
FROM generate_series(1, 5) g;
RESET ROLE;

-- A read inserts its row; the chain is not touched until the sealer runs.
DO $$ BEGIN
    ASSERT (SELECT count(*) FROM otobot.audit_chain) = 0, 'reads do not write the chain';
    ASSERT (SELECT unsealed_rows FROM otobot.audit_seal_lag()) = 6;
END $$;

SET ROLE otobot_api;
SELECT test.seal_all();
RESET ROLE;
DO $$
DECLARE r record;
BEGIN
    ASSERT (SELECT count(*) FROM otobot.audit_chain) = 6, 'all settled rows sealed';
    ASSERT (SELECT unsealed_rows FROM otobot.audit_seal_lag()) = 0;
    SELECT * INTO r FROM otobot.verify_audit_chain();
    ASSERT r.ok AND r.checked = 6, 'a clean chain verifies: ' || coalesce(r.problem, '');
END $$;

-- Sealing again seals nothing new; more reads are chained after the old ones.
SET ROLE otobot_api;
SELECT otobot.seal_audit_chain();
SELECT otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'notion', NULL, true, NULL, NULL, 'n8n', 'late');
SELECT otobot.seal_audit_chain(1);
SELECT test.seal_all();
RESET ROLE;
DO $$ BEGIN
    ASSERT (SELECT count(*) FROM otobot.audit_chain) = 7;
    ASSERT (SELECT bool_and(ok) FROM otobot.verify_audit_chain());
END $$;

-- A transaction still open is not sealed until it ends.
-- (Simulated with a row whose transaction is ours: it cannot be below our own xmin.)
BEGIN;
SELECT otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'notion', NULL, true, NULL, NULL, 'n8n', 'open-tx');
SET LOCAL ROLE otobot_api;
SELECT otobot.seal_audit_chain();
RESET ROLE;
DO $$ BEGIN
    ASSERT NOT EXISTS (SELECT 1 FROM otobot.audit_chain c JOIN otobot.credential_access_logs l ON l.id = c.log_id
                       WHERE l.request_id = 'open-tx'), 'a row of a running transaction must not be sealed';
END $$;
COMMIT;
SET ROLE otobot_api;
SELECT test.seal_all();
RESET ROLE;

-- Without the key, nothing is sealed or verified.
SELECT otobot.otobot_unload_keys();
SELECT test.expect_error('SELECT otobot.verify_audit_chain()', '55000', '%no encryption key%');
SELECT test.load_keys();

-- Someone with superuser rights deletes a sealed row with triggers disabled.
SET session_replication_role = replica;
DELETE FROM otobot.credential_access_logs WHERE request_id = 'r3';
SET session_replication_role = origin;
DO $$
DECLARE r record;
BEGIN
    SELECT * INTO r FROM otobot.verify_audit_chain();
    ASSERT NOT r.ok, 'a deleted row must break the chain';
    ASSERT r.broken_seq = 4 AND r.problem LIKE '%was deleted%', 'the first broken link is reported: ' || r.problem;
END $$;
