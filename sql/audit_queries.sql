-- ============================================================================
-- Audit queries for a DBA or an auditor (role otobot_auditor reads the log
-- and connection metadata, never ciphertext). Run in psql on the vault
-- database; each query stands alone. Export for a SIEM with
--   otobot audit export --since 2026-01-01T00:00:00Z --format jsonl
-- Verify the keyed chain with `otobot audit verify`.
-- ============================================================================

-- Reads per caller (source) and day, last 30 days.
SELECT date_trunc('day', created_at) AS day, source, count(*) AS reads
FROM otobot.credential_access_logs
WHERE action = 'credential_read' AND created_at >= now() - interval '30 days'
GROUP BY 1, 2
ORDER BY 1 DESC, 3 DESC;

-- Decryption failures: a tampered row, a wrong key, or a value copied from
-- another row or column. Each deserves an explanation.
SELECT created_at, client_connection_id, user_id, source, request_id, detail
FROM otobot.credential_access_logs
WHERE action = 'decrypt_failed'
ORDER BY created_at DESC
LIMIT 100;

-- Break-glass reveals by a DBA, with their stated reasons.
SELECT created_at, db_role, client_connection_id, user_id, detail ->> 'reason' AS reason
FROM otobot.credential_access_logs
WHERE action = 'credential_revealed'
ORDER BY created_at DESC;

-- Connection changes (created, deactivated, tokens refreshed or replaced)
-- with their reasons.
SELECT created_at, action, source, client_connection_id, user_id, detail ->> 'reason' AS reason
FROM otobot.credential_access_logs
WHERE action IN ('connection_created', 'connection_deactivated', 'tokens_updated', 'tokens_refreshed', 'status_changed')
ORDER BY created_at DESC
LIMIT 200;

-- Users who read an unusual number of secrets in the last hour.
SELECT user_id, count(*) AS reads, count(DISTINCT client_connection_id) AS connections
FROM otobot.credential_access_logs
WHERE action = 'credential_read' AND created_at >= now() - interval '1 hour'
GROUP BY user_id
HAVING count(*) > 100
ORDER BY reads DESC;

-- Lookups of connections that do not exist: probing, or a misconfigured workflow.
SELECT source, user_id, service_code, count(*) AS misses, max(created_at) AS last
FROM otobot.credential_access_logs
WHERE action = 'credential_not_found' AND created_at >= now() - interval '1 day'
GROUP BY 1, 2, 3
ORDER BY misses DESC;

-- Failed logins (the attempted email is stored as a SHA-256 digest only).
SELECT date_trunc('hour', created_at) AS hour, count(*) AS failures,
       count(DISTINCT detail ->> 'email_sha256') AS distinct_emails
FROM otobot.credential_access_logs
WHERE action = 'login_failed' AND created_at >= now() - interval '1 day'
GROUP BY 1
ORDER BY 1 DESC;

-- Administration: key rotation batches and retired key versions.
SELECT created_at, request_id, detail ->> 'connections' AS connections,
       detail ->> 'to_version' AS to_version, detail -> 'secrets_by_old_version' AS from_versions
FROM otobot.credential_access_logs
WHERE action = 'key_rotation_batch'
ORDER BY id DESC
LIMIT 50;
SELECT * FROM otobot.retired_key_versions ORDER BY version;

-- Everything about one connection, in order (replace the id).
-- SELECT l.*, c.seq AS chain_seq FROM otobot.credential_access_logs l
-- LEFT JOIN otobot.audit_chain c ON c.log_id = l.id
-- WHERE l.client_connection_id = '00000000-0000-0000-0000-000000000000' ORDER BY l.id;

-- How far behind the sealer is (rows not yet in the keyed chain).
SELECT * FROM otobot.audit_seal_lag();
