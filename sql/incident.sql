-- ============================================================================
-- Incident response (the seed's "Plan de réponse aux incidents"), for a DBA
-- in psql on the vault database. Every change goes through the vault's
-- audited functions: never UPDATE client_connections by hand (it would be
-- audited as a bare 'connection_deactivated' with no reason and source 'sql').
--
--   psql "$MIGRATION_DATABASE_URL" -v connection_id=… -v reason='…' -f sql/incident.sql
--
-- The same from the command line:
--   otobot deactivate-connection <id> --reason "…"
--   otobot deactivate-user <id> --reason "…"
-- Variables (psql -v): connection_id, user_id, source, reason, and since, an SQL
-- expression (default: now() - interval '24 hours'; e.g. -v since="'2026-01-31'::timestamptz").
-- Each section runs only when its variables are set.
-- ============================================================================
\set ON_ERROR_STOP on
\if :{?since}
\else
\set since 'now() - interval ''24 hours'''
\endif

-- ---------------------------------------------------------------------------
-- 1. A token is suspected compromised: deactivate its connection now.
--    Then notify the user and revoke the token at the provider (Google…).
-- ---------------------------------------------------------------------------
\if :{?connection_id}
SELECT otobot.deactivate_connection(:'connection_id'::uuid, NULL, 'dba', NULL, :'reason') AS deactivated;

-- Who read it recently, from where, with which request ids.
SELECT l.created_at, l.action, l.source, l.request_id, l.db_role, l.user_id
FROM otobot.credential_access_logs l
WHERE l.client_connection_id = :'connection_id'::uuid
  AND l.created_at >= :since
ORDER BY l.created_at DESC;
\endif

-- ---------------------------------------------------------------------------
-- 2. An account is compromised or the person left: deactivate the user and
--    every connection they hold (each deactivation audited).
-- ---------------------------------------------------------------------------
\if :{?user_id}
SELECT otobot.deactivate_user(NULL, :'user_id'::uuid, 'dba', NULL, :'reason') AS deactivated;

-- Every secret of this user read recently, by caller (source) and service.
SELECT l.source, l.service_code, l.action, count(*) AS reads, min(l.created_at) AS first, max(l.created_at) AS last
FROM otobot.credential_access_logs l
WHERE l.user_id = :'user_id'::uuid
  AND l.created_at >= :since
GROUP BY l.source, l.service_code, l.action
ORDER BY reads DESC;
\endif

-- ---------------------------------------------------------------------------
-- 3. A caller's token leaked (N8N_INTERNAL_TOKEN or an INTERNAL_TOKENS
--    entry): what did that source read? Rotate the token in .env, restart
--    `otobot serve`, then review these reads.
-- ---------------------------------------------------------------------------
\if :{?source}
SELECT l.created_at, l.user_id, l.service_code, l.client_connection_id, l.action, l.request_id
FROM otobot.credential_access_logs l
WHERE l.source = :'source'
  AND l.action IN ('credential_read', 'credential_revealed', 'decrypt_failed')
  AND l.created_at >= :since
ORDER BY l.created_at DESC
LIMIT 1000;
\endif

-- ---------------------------------------------------------------------------
-- 4. Always: is the audit trail itself intact? (needs the keyring: run
--    `otobot audit verify` — it seals pending rows, then verifies.)
-- ---------------------------------------------------------------------------
SELECT * FROM otobot.audit_seal_lag();
