-- Adversary: the audit log and its chain. As otobot_api (with the key
-- loaded), otobot_auditor and otobot_dba: no audit row can be edited,
-- deleted, forged or skipped, no internal helper can be called, and no chain
-- link forged. As a superuser: removing the newest sealed rows and rewinding
-- the head passes the old verification, but not one against the published
-- checkpoint.
SELECT test.load_keys();
SET ROLE otobot_api;
SELECT otobot.store_api_key('a0000000-0000-0000-0000-00000000000a', 'notion', 'secret_notion', NULL, NULL, 'test', NULL);
SELECT otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'notion', NULL, true, NULL, NULL, 'n8n', 'r' || g)
FROM generate_series(1, 5) g;
SELECT test.seal_all();
RESET ROLE;

-- ---------------------------------------------------------------------------
-- Every role: no write to the log, the chain or its head; no internal helper.
-- ---------------------------------------------------------------------------
DO $$
DECLARE
    r    name;
    stmt text;
BEGIN
    FOREACH r IN ARRAY ARRAY['otobot_api', 'otobot_auditor', 'otobot_dba']::name[] LOOP
        EXECUTE format('SET LOCAL ROLE %I', r);
        FOREACH stmt IN ARRAY ARRAY[
            $q$UPDATE otobot.credential_access_logs SET action = 'nothing'$q$,
            $q$DELETE FROM otobot.credential_access_logs$q$,
            $q$TRUNCATE otobot.credential_access_logs$q$,
            $q$INSERT INTO otobot.credential_access_logs (source, action) VALUES ('n8n', 'credential_read')$q$,
            $q$INSERT INTO otobot.audit_chain (seq, log_id, key_version, mac) VALUES (99, 1, 1, '\x00')$q$,
            $q$DELETE FROM otobot.audit_chain$q$,
            $q$UPDATE otobot.audit_chain_head SET last_seq = 0$q$,
            $q$SELECT otobot.write_audit('credential_read', NULL, NULL, NULL, NULL, '{}')$q$,
            $q$SELECT otobot.begin_scope('system', NULL, NULL, 'forged', NULL)$q$,
            $q$SELECT otobot.audit_row_bytes(l, 1) FROM otobot.credential_access_logs l$q$,
            $q$SELECT otobot.audit_seal_horizon()$q$,
            $q$SELECT otobot.otobot_audit_mac(1, '\x00')$q$,
            $q$SELECT otobot.refresh_job(gen_random_uuid())$q$,
            $q$SELECT otobot.store_connection('oauth2', 'a0000000-0000-0000-0000-00000000000a', 'google', 'x', NULL, NULL, NULL, NULL, NULL, 'x', NULL)$q$,
            $q$SELECT otobot.try_decrypt('1:00:00:', 'x')$q$,
            $q$SELECT otobot.begin_actor('a0000000-0000-0000-0000-00000000000a', 'x', NULL)$q$,
            $q$SELECT otobot.active_user('a0000000-0000-0000-0000-00000000000a')$q$]
        LOOP
            PERFORM test.expect_error(stmt, '42501');
        END LOOP;
        RESET ROLE;
    END LOOP;
    -- The auditor reads the chain but may not seal it.
    SET LOCAL ROLE otobot_auditor;
    PERFORM test.expect_error('SELECT otobot.seal_audit(10)', '42501');
    PERFORM test.expect_error('SELECT otobot.seal_audit_chain(10)', '42501');
    RESET ROLE;
END
$$;

-- ---------------------------------------------------------------------------
-- A superuser deletes the newest sealed rows and rewinds the head.
-- ---------------------------------------------------------------------------
-- What the sealer published outside the database (AUDIT_CHECKPOINT_FILE).
CREATE TEMP TABLE checkpoint AS SELECT head_seq AS seq, head_mac AS mac FROM otobot.seal_audit(1);
DO $$ BEGIN
    ASSERT (SELECT seq FROM checkpoint) = 6, 'six links sealed';
    ASSERT (SELECT ok FROM checkpoint, otobot.verify_audit_chain(checkpoint.seq, checkpoint.mac)),
        'a clean chain matches its checkpoint';
END $$;

BEGIN;
SET LOCAL session_replication_role = replica;
DELETE FROM otobot.credential_access_logs WHERE id IN (SELECT log_id FROM otobot.audit_chain WHERE seq > 4);
DELETE FROM otobot.audit_chain WHERE seq > 4;
UPDATE otobot.audit_chain_head h
SET last_seq = 4, last_mac = c.mac, cursor_xid = l.xid, cursor_id = l.id
FROM otobot.audit_chain c JOIN otobot.credential_access_logs l ON l.id = c.log_id
WHERE c.seq = 4;
COMMIT;

DO $$
DECLARE r record;
BEGIN
    -- The gap this closes: inside the database, nothing is missing.
    SELECT * INTO r FROM otobot.verify_audit_chain();
    ASSERT r.ok AND r.checked = 4, 'without a checkpoint, a truncated and rewound tail goes unseen';
    -- Against the checkpoint published before: detected.
    SELECT v.* INTO r FROM checkpoint, otobot.verify_audit_chain(checkpoint.seq, checkpoint.mac) v;
    ASSERT NOT r.ok AND r.checked = 4 AND r.broken_seq = 5, 'truncation detected at link 5: ' || coalesce(r.problem, '');
    ASSERT r.problem LIKE 'the chain ends at link 4 but a checkpoint published link 6%', r.problem;
    -- A checkpoint whose MAC differs: the chain was rewritten.
    SELECT * INTO r FROM otobot.verify_audit_chain(3, '\x0000000000000000000000000000000000000000000000000000000000000000');
    ASSERT NOT r.ok AND r.broken_seq = 3 AND r.problem LIKE 'link 3 does not match the published checkpoint%', r.problem;
END $$;

-- A half-given checkpoint is refused.
SELECT test.expect_error($$SELECT * FROM otobot.verify_audit_chain(3, NULL)$$, '22023', '%checkpoint%');
SELECT test.expect_error($$SELECT * FROM otobot.verify_audit_chain(0, '\x00')$$, '22023', '%checkpoint%');

-- The sealer goes on from the rewound head; the new links never match the old
-- checkpoint's MAC at link 6.
SET ROLE otobot_api;
SELECT otobot.get_user_credentials('a0000000-0000-0000-0000-00000000000a', 'notion', NULL, true, NULL, NULL, 'n8n', 'later' || g)
FROM generate_series(1, 3) g;
SELECT test.seal_all();
RESET ROLE;
DO $$
DECLARE r record;
BEGIN
    SELECT v.* INTO r FROM checkpoint, otobot.verify_audit_chain(checkpoint.seq, checkpoint.mac) v;
    ASSERT NOT r.ok AND r.broken_seq = 6 AND r.problem LIKE 'link 6 does not match%', 'rewritten tail detected: ' || r.problem;
END $$;
