-- ============================================================================
-- 0015 — the access history names the grant and the workflow of each read.
--
-- 0014 records in every credential audit row the grant that allowed it
-- (detail: grant_id, grant_kind, workflow), or that the caller was trusted,
-- and writes a credential_refused row (detail: reason, grant_id) for each
-- fetch refused for want of a valid grant. This replaces 0012's
-- otobot.list_own_access_history (same signature, same privileges) so that
-- each entry also carries:
--   grantId    the grant that allowed (or was refused for) the read, when it
--              is the user's own;
--   grantKind  run or standing;
--   workflow   the grant's workflow (from the audit row; for rows that do not
--              carry it, from the grant itself while it exists);
--   trusted    true when a trusted caller read without a grant;
--   refusal    for credential_refused, why (grant_required, unknown,
--              other_user, expired, revoked, service_not_covered).
-- and "reads" now include refused fetches: an attempt to read one's secret
-- without consent is exactly what the history is for.
--
-- SECURITY: unchanged discipline: SECURITY DEFINER, empty search_path, the
-- actor must be active, then a user scope even for an admin, so logs_own is
-- the only policy on the log and grants_own the only one on grants: a user
-- sees only rows about their own secrets, and the workflow of their own
-- grants. A refusal for another user's grant (reason other_user) shows
-- neither that grant's id nor its workflow.
-- ============================================================================
SET LOCAL ROLE otobot_owner;

CREATE OR REPLACE FUNCTION otobot.list_own_access_history(p_actor_user_id uuid, p_before_id bigint, p_limit integer,
                                                          p_reads_only boolean, p_service_code text)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_user    record;
    v_entries jsonb;
    v_next    bigint;
    v_count   bigint;
BEGIN
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'otobot: limit must be 1 to 100' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_before_id IS NOT NULL AND p_before_id < 1 THEN
        RAISE EXCEPTION 'otobot: before must be a positive entry id' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM otobot.check_text(p_service_code, 'service', 63);
    PERFORM otobot.begin_scope('system', NULL, NULL, 'portal', NULL);
    v_user := otobot.active_user(p_actor_user_id);
    -- SECURITY: a user scope even for an admin, so logs_own is the only
    -- policy that matches: an admin's history is their own, not their client's.
    -- (grants_own likewise: only the actor's own grants are joined below.)
    PERFORM otobot.begin_scope('user', p_actor_user_id, v_user.client_id, 'portal', NULL);
    SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'id', y.id, 'at', y.created_at, 'action', y.action, 'source', y.source,
               'service', y.service_code, 'connectionId', y.client_connection_id,
               'label', y.label, 'accountIdentifier', y.account_identifier,
               'requestId', y.request_id,
               'grantId', CASE WHEN y.foreign_grant THEN NULL ELSE y.detail ->> 'grant_id' END,
               'grantKind', COALESCE(y.detail ->> 'grant_kind', y.grant_kind,
                                     CASE WHEN y.action LIKE 'grant\_%' THEN y.detail ->> 'kind' END),
               'workflow', CASE WHEN y.foreign_grant THEN NULL ELSE COALESCE(y.detail ->> 'workflow', y.grant_workflow) END,
               'trusted', COALESCE(y.detail @> '{"trusted":true}', false),
               'refusal', CASE WHEN y.action = 'credential_refused' THEN y.detail ->> 'reason' END,
               'detail', CASE WHEN y.foreign_grant THEN y.detail - 'grant_id' ELSE y.detail END)
               ORDER BY y.id DESC), '[]'::jsonb),
           pg_catalog.count(*)
    INTO v_entries, v_count
    FROM (SELECT x.*, c.label, c.account_identifier, g.kind AS grant_kind, g.workflow AS grant_workflow,
                 (x.action = 'credential_refused' AND x.detail ->> 'reason' = 'other_user') AS foreign_grant
          -- The page first (the index on (user_id, id)), then what it refers to.
          FROM (SELECT l.id, l.created_at, l.action, l.source, l.service_code, l.client_connection_id,
                       l.request_id, l.detail
                FROM otobot.credential_access_logs l
                WHERE l.user_id = p_actor_user_id
                  AND (p_before_id IS NULL OR l.id < p_before_id)
                  AND (NOT COALESCE(p_reads_only, true) OR l.action IN
                       ('credential_read', 'credential_revealed', 'credential_expired', 'credential_not_found',
                        'decrypt_failed', 'credential_refused'))
                  AND (p_service_code IS NULL OR l.service_code = p_service_code)
                ORDER BY l.id DESC
                LIMIT p_limit + 1) x
          LEFT JOIN otobot.client_connections c ON c.id = x.client_connection_id
          -- Row-level security (user scope): only the actor's own grants join.
          LEFT JOIN otobot.grants g
                 ON g.id = CASE WHEN (x.detail ->> 'grant_id') ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                                THEN (x.detail ->> 'grant_id')::uuid END) y;
    -- One row more than asked tells whether another page follows.
    IF v_count > p_limit THEN
        v_entries := v_entries - (-1);
        v_next := (v_entries -> -1 ->> 'id')::bigint;
    END IF;
    RETURN pg_catalog.jsonb_build_object('entries', v_entries, 'nextBefore', v_next);
END
$$;
COMMENT ON FUNCTION otobot.list_own_access_history(uuid, bigint, integer, boolean, text) IS
    'The acting user''s own audit rows (reads of their secrets, refused fetches included, or everything), newest '
    'first, keyset-paginated (at most 100); each names its grant (id, kind, workflow) or a trusted caller.';
