-- Edits and forgeries made without the key are detected.
SELECT test.load_keys();
SET ROLE otobot_api;
SELECT otobot.store_api_key('a0000000-0000-0000-0000-00000000000a', 'openai', 'sk-test', NULL, NULL, 'test', NULL);
SELECT otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'openai', NULL, true, NULL, NULL, 'n8n', 'r' || g)
FROM generate_series(1, 3) g;
SELECT test.seal_all();
RESET ROLE;

-- An edited row (its source rewritten) breaks its link.
SET session_replication_role = replica;
UPDATE otobot.credential_access_logs SET source = 'someone-else' WHERE request_id = 'r2';
SET session_replication_role = origin;
DO $$
DECLARE r record;
BEGIN
    SELECT * INTO r FROM otobot.verify_audit_chain();
    ASSERT NOT r.ok AND r.broken_seq = 3 AND r.problem LIKE '%altered%', 'edit detected: ' || coalesce(r.problem, 'none');
END $$;
SET session_replication_role = replica;
UPDATE otobot.credential_access_logs SET source = 'n8n' WHERE request_id = 'r2';
SET session_replication_role = origin;
DO $$ BEGIN ASSERT (SELECT ok FROM otobot.verify_audit_chain()), 'restored row verifies again'; END $$;

-- Recomputing the chain with a guessed key does not help: the MAC is keyed.
SET session_replication_role = replica;
UPDATE otobot.audit_chain SET mac = sha256(mac) WHERE seq = 4;
SET session_replication_role = origin;
DO $$ BEGIN
    ASSERT (SELECT NOT ok AND broken_seq = 4 FROM otobot.verify_audit_chain()), 'a rewritten MAC is detected';
END $$;
SET session_replication_role = replica;
DELETE FROM otobot.audit_chain WHERE seq = 4;
SET session_replication_role = origin;
DO $$
DECLARE r record;
BEGIN
    SELECT * INTO r FROM otobot.verify_audit_chain();
    ASSERT NOT r.ok AND r.problem LIKE '%newest links were removed%', 'a removed last link is detected: ' || coalesce(r.problem, 'none');
END $$;
