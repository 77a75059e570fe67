-- ============================================================================
-- 0014 — grants: a workflow reads a user's secret only with that user's consent
--
-- The internal token authenticates n8n, not a user's consent. From here on a
-- credential fetch also presents a grant, checked by the vault itself:
--   * a run grant is minted by the API's trigger route for the verified user
--     (short-lived) and travels to n8n with the run;
--   * a standing grant is created by a user for a scheduled workflow, and
--     listed and revoked by that user or the client's admin.
-- Grants are random tokens; only their SHA-256 is stored here (the API hashes
-- the token it was shown), so a copy of this table releases nothing.
--
-- Replaces otobot.get_user_credentials(uuid, text, uuid, text, text, text,
-- integer) with a version that takes the grant (or the caller's trusted flag)
-- and checks it inside the SECURITY DEFINER function; every release names its
-- grant in the audit row, every refusal writes a credential_refused row.
-- ============================================================================
SET LOCAL ROLE otobot_owner;

-- ---------------------------------------------------------------------------
-- The grants
-- ---------------------------------------------------------------------------
CREATE TABLE otobot.grants (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    uuid NOT NULL,
    client_id  uuid NOT NULL,
    services   text[] NOT NULL CHECK (cardinality(services) BETWEEN 1 AND 100
                                      AND array_position(services, NULL) IS NULL),
    workflow   text NOT NULL CHECK (length(workflow) BETWEEN 1 AND 100 AND workflow !~ '[[:cntrl:]]'),
    kind       text NOT NULL CHECK (kind IN ('run', 'standing')),
    token_hash bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    revoked_by uuid,
    created_by uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (user_id, client_id) REFERENCES otobot.users (id, client_id)
);
CREATE INDEX grants_user_idx ON otobot.grants (user_id, created_at);
CREATE INDEX grants_client_idx ON otobot.grants (client_id, created_at);
COMMENT ON TABLE otobot.grants IS
    'A user''s consent that a workflow reads their secrets: run grants (one triggered run, short-lived) and '
    'standing grants (scheduled workflows). token_hash is the SHA-256 of the token shown once.';
COMMENT ON COLUMN otobot.grants.services IS 'Service codes whose credentials the grant releases.';
COMMENT ON COLUMN otobot.grants.workflow IS 'The workflow it was given to (the webhook path of a run grant).';

ALTER TABLE otobot.grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE otobot.grants FORCE ROW LEVEL SECURITY;
CREATE POLICY grants_system ON otobot.grants TO otobot_owner
    USING (otobot.scope_kind() = 'system') WITH CHECK (otobot.scope_kind() = 'system');
-- A user (an admin too) sees and changes their own grants, and creates grants only in their own name.
CREATE POLICY grants_own ON otobot.grants TO otobot_owner
    USING (user_id = otobot.scope_user())
    WITH CHECK (user_id = otobot.scope_user() AND client_id = otobot.scope_client());
-- A client admin sees and revokes their client's grants (never creates one for someone else).
CREATE POLICY grants_client_admin_read ON otobot.grants FOR SELECT TO otobot_owner
    USING (otobot.scope_kind() = 'admin' AND client_id = otobot.scope_client());
CREATE POLICY grants_client_admin_update ON otobot.grants FOR UPDATE TO otobot_owner
    USING (otobot.scope_kind() = 'admin' AND client_id = otobot.scope_client())
    WITH CHECK (otobot.scope_kind() = 'admin' AND client_id = otobot.scope_client());
CREATE POLICY grants_auditor ON otobot.grants FOR SELECT TO otobot_auditor USING (true);
REVOKE ALL ON otobot.grants FROM PUBLIC;
GRANT SELECT (id, user_id, client_id, services, workflow, kind, expires_at, revoked_at, revoked_by,
              created_by, created_at)
    ON otobot.grants TO otobot_auditor;

-- SECURITY: a grant says once what it covers. Whoever updates a row (an
-- owner's function, or an administrator by hand) may only end it sooner:
-- revoke it, or shorten its life. A revoked grant stays revoked.
CREATE FUNCTION otobot.grant_change_guard() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
BEGIN
    IF NEW.id IS DISTINCT FROM OLD.id OR NEW.user_id IS DISTINCT FROM OLD.user_id
       OR NEW.client_id IS DISTINCT FROM OLD.client_id OR NEW.services IS DISTINCT FROM OLD.services
       OR NEW.workflow IS DISTINCT FROM OLD.workflow OR NEW.kind IS DISTINCT FROM OLD.kind
       OR NEW.token_hash IS DISTINCT FROM OLD.token_hash OR NEW.created_by IS DISTINCT FROM OLD.created_by
       OR NEW.created_at IS DISTINCT FROM OLD.created_at THEN
        RAISE EXCEPTION 'otobot: a grant cannot be changed, only revoked or shortened'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.revoked_at IS NOT NULL AND (NEW.revoked_at IS DISTINCT FROM OLD.revoked_at
                                       OR NEW.revoked_by IS DISTINCT FROM OLD.revoked_by) THEN
        RAISE EXCEPTION 'otobot: a revoked grant stays revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.expires_at > OLD.expires_at THEN
        RAISE EXCEPTION 'otobot: a grant cannot be extended; create a new one' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION otobot.grant_change_guard() IS
    'Refuses any change to a grant but revoking it or shortening its life.';
CREATE TRIGGER grants_change_guard BEFORE UPDATE ON otobot.grants
    FOR EACH ROW EXECUTE FUNCTION otobot.grant_change_guard();

-- Every grant created, revoked or shortened is audited (never its token).
CREATE FUNCTION otobot.audit_grant_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
DECLARE
    v_action text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        v_action := 'grant_created';
    ELSIF OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL THEN
        v_action := 'grant_revoked';
    ELSIF NEW.expires_at IS DISTINCT FROM OLD.expires_at THEN
        v_action := 'grant_shortened';
    ELSE
        RETURN NULL;
    END IF;
    PERFORM otobot.write_audit(
        v_action, NULL, NEW.user_id, NEW.client_id, NULL,
        pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'grant_id', NEW.id, 'kind', NEW.kind, 'workflow', NEW.workflow,
            'services', pg_catalog.to_jsonb(NEW.services), 'expires_at', NEW.expires_at,
            'by', CASE WHEN v_action = 'grant_revoked' THEN NEW.revoked_by ELSE NEW.created_by END)));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION otobot.audit_grant_change() IS
    'Audits each grant created, revoked or shortened (grant_created, grant_revoked, grant_shortened), never its token.';
CREATE TRIGGER grants_audit AFTER INSERT OR UPDATE ON otobot.grants
    FOR EACH ROW EXECUTE FUNCTION otobot.audit_grant_change();

-- ---------------------------------------------------------------------------
-- Internal helpers (no SET clause: they run inside the caller's scope)
-- ---------------------------------------------------------------------------
CREATE FUNCTION otobot.check_grant_input(p_token_hash bytea, p_workflow text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF p_token_hash IS NULL OR pg_catalog.octet_length(p_token_hash) <> 32 THEN
        RAISE EXCEPTION 'otobot: a grant token hash is 32 bytes' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_workflow IS NULL OR pg_catalog.length(p_workflow) NOT BETWEEN 1 AND 100 OR p_workflow ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'otobot: workflow must be 1 to 100 characters without control characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;
COMMENT ON FUNCTION otobot.check_grant_input(bytea, text) IS
    'Raises 22023 unless the token hash is 32 bytes and the workflow name 1 to 100 printable characters.';

-- The services a grant covers, each an active service code, sorted and
-- without duplicates; NULL means every active service.
CREATE FUNCTION otobot.grant_services(p_services text[]) RETURNS text[]
    LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_services text[];
    v_unknown  text;
BEGIN
    IF p_services IS NULL THEN
        SELECT pg_catalog.array_agg(s.service_code ORDER BY s.service_code) INTO v_services
        FROM otobot.services s WHERE s.is_active;
        RETURN v_services;
    END IF;
    IF pg_catalog.cardinality(p_services) NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'otobot: a grant covers 1 to 100 services' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT x INTO v_unknown
    FROM pg_catalog.unnest(p_services) AS x
    WHERE x IS NULL OR NOT EXISTS (SELECT 1 FROM otobot.services s WHERE s.service_code = x AND s.is_active)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'otobot: unknown service %', COALESCE(pg_catalog.quote_literal(pg_catalog.left(v_unknown, 64)), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT pg_catalog.array_agg(DISTINCT x ORDER BY x) INTO v_services FROM pg_catalog.unnest(p_services) AS x;
    RETURN v_services;
END
$$;
COMMENT ON FUNCTION otobot.grant_services(text[]) IS
    'Validates the services of a new grant (active service codes, sorted, distinct); NULL means every active service.';

-- A grant as the API shows it (never its hash). Call in a scope that sees it.
CREATE FUNCTION otobot.grant_json(g otobot.grants) RETURNS jsonb
    LANGUAGE sql STABLE
AS $$
    SELECT pg_catalog.jsonb_build_object(
        'id', g.id, 'userId', g.user_id, 'clientId', g.client_id, 'kind', g.kind, 'workflow', g.workflow,
        'services', pg_catalog.to_jsonb(g.services), 'createdAt', g.created_at, 'createdBy', g.created_by,
        'expiresAt', g.expires_at, 'revokedAt', g.revoked_at, 'revokedBy', g.revoked_by,
        'status', CASE WHEN g.revoked_at IS NOT NULL THEN 'revoked'
                       WHEN g.expires_at <= pg_catalog.now() THEN 'expired'
                       ELSE 'active' END)
$$;
COMMENT ON FUNCTION otobot.grant_json(otobot.grants) IS 'A grant as JSON (status active, expired or revoked), without its token hash.';

-- ---------------------------------------------------------------------------
-- Creating, listing and revoking grants
-- ---------------------------------------------------------------------------

-- The trigger route: a run grant for the verified user, for one run of one
-- workflow. The API passes the user of the verified token, never one named
-- by the request body.
CREATE FUNCTION otobot.mint_run_grant(p_user_id uuid, p_workflow text, p_services text[], p_token_hash bytea,
                                      p_ttl_seconds integer, p_source text, p_request_id text)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_actor    record;
    v_services text[];
    g          otobot.grants;
BEGIN
    PERFORM otobot.check_grant_input(p_token_hash, p_workflow);
    IF p_ttl_seconds IS NULL OR p_ttl_seconds NOT BETWEEN 1 AND 86400 THEN
        RAISE EXCEPTION 'otobot: a run grant lives 1 to 86400 seconds' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_actor := otobot.begin_actor(p_user_id, p_source, p_request_id);
    v_services := otobot.grant_services(p_services);
    -- Housekeeping, bounded to this user: run grants dead for a day go (their
    -- audit rows stay).
    DELETE FROM otobot.grants gr
    WHERE gr.user_id = p_user_id AND gr.kind = 'run'
      AND (gr.expires_at < pg_catalog.now() - interval '1 day' OR gr.revoked_at < pg_catalog.now() - interval '1 day');
    INSERT INTO otobot.grants (user_id, client_id, services, workflow, kind, token_hash, expires_at, created_by)
    VALUES (p_user_id, v_actor.client_id, v_services, p_workflow, 'run', p_token_hash,
            pg_catalog.now() + pg_catalog.make_interval(secs => p_ttl_seconds), p_user_id)
    RETURNING * INTO g;
    RETURN otobot.grant_json(g);
END
$$;
COMMENT ON FUNCTION otobot.mint_run_grant(uuid, text, text[], bytea, integer, text, text) IS
    'Creates a run grant for an active user (the verified caller of the trigger route): one workflow, '
    'the given services (NULL: every service), 1 to 86400 seconds. Audited as grant_created.';

-- A user's standing grant for a scheduled workflow, in their own name only,
-- expiring within a year.
CREATE FUNCTION otobot.create_standing_grant(p_actor_user_id uuid, p_workflow text, p_services text[],
                                             p_token_hash bytea, p_expires_at timestamptz,
                                             p_source text, p_request_id text)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_actor record;
    g       otobot.grants;
BEGIN
    PERFORM otobot.check_grant_input(p_token_hash, p_workflow);
    IF p_services IS NULL THEN
        RAISE EXCEPTION 'otobot: a standing grant names its services' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_expires_at IS NULL OR p_expires_at <= pg_catalog.now() + interval '1 minute'
       OR p_expires_at > pg_catalog.now() + interval '1 year' THEN
        RAISE EXCEPTION 'otobot: a standing grant expires between one minute and one year from now'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_actor := otobot.begin_actor(p_actor_user_id, p_source, p_request_id);
    -- SECURITY: always the actor's own grant: an admin cannot consent for someone else.
    INSERT INTO otobot.grants (user_id, client_id, services, workflow, kind, token_hash, expires_at, created_by)
    VALUES (p_actor_user_id, v_actor.client_id, otobot.grant_services(p_services), p_workflow, 'standing',
            p_token_hash, p_expires_at, p_actor_user_id)
    RETURNING * INTO g;
    RETURN otobot.grant_json(g);
END
$$;
COMMENT ON FUNCTION otobot.create_standing_grant(uuid, text, text[], bytea, timestamptz, text, text) IS
    'Creates a standing grant in the acting user''s own name (services required, expiry within a year). Audited.';

-- The actor's grants, or their client's for an admin: standing grants in
-- every state, run grants while they live. Newest first, at most 500.
CREATE FUNCTION otobot.list_grants(p_actor_user_id uuid, p_whole_client boolean) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_actor record;
BEGIN
    v_actor := otobot.begin_actor(p_actor_user_id, 'api', NULL);
    IF COALESCE(p_whole_client, false) AND v_actor.role <> 'admin' THEN
        RAISE EXCEPTION 'otobot: only an admin may list the client''s grants' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN COALESCE((
        SELECT pg_catalog.jsonb_agg(otobot.grant_json(x.gr) || pg_catalog.jsonb_build_object('userEmail', u.email)
                                    ORDER BY (x.gr).created_at DESC, (x.gr).id)
        FROM (SELECT gr FROM otobot.grants gr
              WHERE (COALESCE(p_whole_client, false) OR gr.user_id = p_actor_user_id)
                AND (gr.kind = 'standing' OR (gr.revoked_at IS NULL AND gr.expires_at > pg_catalog.now()))
              ORDER BY gr.created_at DESC, gr.id
              LIMIT 500) x
        LEFT JOIN otobot.users u ON u.id = (x.gr).user_id), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION otobot.list_grants(uuid, boolean) IS
    'The acting user''s grants, or (admin, p_whole_client) their client''s: standing grants and live run grants, newest first.';

-- Revokes a grant: its user, or an admin of its client (row-level security
-- decides); without an actor (the DBA), any grant. False when there is no
-- such live grant for this actor.
CREATE FUNCTION otobot.revoke_grant(p_grant_id uuid, p_actor_user_id uuid, p_source text, p_request_id text)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    IF p_actor_user_id IS NULL THEN
        PERFORM otobot.begin_scope('system', NULL, NULL, p_source, p_request_id);
    ELSE
        PERFORM otobot.begin_actor(p_actor_user_id, p_source, p_request_id);
    END IF;
    UPDATE otobot.grants g
    SET revoked_at = pg_catalog.now(), revoked_by = p_actor_user_id
    WHERE g.id = p_grant_id AND g.revoked_at IS NULL;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION otobot.revoke_grant(uuid, uuid, text, text) IS
    'Revokes a grant (audited as grant_revoked): its user''s or, for an admin, their client''s; any with no actor (DBA).';

-- A refused fetch: one credential_refused audit row, and the answer. Runs
-- inside get_user_credentials, in its user scope.
CREATE FUNCTION otobot.refuse_credentials(p_user_id uuid, p_service_code text, p_connection_id uuid,
                                          p_grant_hash bytea, p_grant_id uuid, p_reason text,
                                          p_source text, p_request_id text)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_client   uuid;
    v_grant_id uuid := p_grant_id;
    v_reason   text := p_reason;
BEGIN
    -- users_own: the scoped user's row is visible (their client goes into the row).
    SELECT u.client_id INTO v_client FROM otobot.users u WHERE u.id = p_user_id;
    IF v_reason = 'unknown' THEN
        -- Someone else's grant presented for this user is worth knowing: look
        -- in system scope, for the audit row only.
        PERFORM otobot.begin_scope('system', NULL, NULL, p_source, p_request_id);
        SELECT gr.id INTO v_grant_id FROM otobot.grants gr WHERE gr.token_hash = p_grant_hash;
        IF FOUND THEN
            v_reason := 'other_user';
        END IF;
        PERFORM otobot.begin_scope('user', p_user_id, NULL, p_source, p_request_id);
    END IF;
    PERFORM otobot.write_audit('credential_refused', p_connection_id, p_user_id, v_client, p_service_code,
                               pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                                   'reason', v_reason, 'grant_id', v_grant_id)));
    RETURN pg_catalog.jsonb_build_object(
        'hasCredentials', false,
        'code', CASE WHEN v_reason = 'grant_required' THEN 'grant_required' ELSE 'grant_invalid' END,
        'reason', v_reason);
END
$$;
COMMENT ON FUNCTION otobot.refuse_credentials(uuid, text, uuid, bytea, uuid, text, text, text) IS
    'Audits a credential fetch refused for want of a valid grant (credential_refused, with the reason) and returns the refusal.';

-- ---------------------------------------------------------------------------
-- The hot path, now behind a grant. Same answers as 0004's version, plus
-- code grant_required (no grant, caller not trusted) and grant_invalid with
-- a reason: unknown, other_user, expired, revoked, service_not_covered.
-- ---------------------------------------------------------------------------
DROP FUNCTION otobot.get_user_credentials(uuid, text, uuid, text, text, text, integer);

CREATE FUNCTION otobot.get_user_credentials(
    p_user_id uuid, p_service_code text, p_grant_hash bytea, p_trusted boolean,
    p_connection_id uuid DEFAULT NULL, p_label text DEFAULT NULL,
    p_source text DEFAULT 'n8n', p_request_id text DEFAULT NULL, p_refresh_margin_seconds integer DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    c        record;
    g        record;
    v_reason   text;
    v_grant_id uuid;
    v_grant    jsonb;
    v_secret text;
    v_meta   jsonb;
BEGIN
    IF p_user_id IS NULL OR p_service_code IS NULL THEN
        RAISE EXCEPTION 'otobot: user id and service are required' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM otobot.begin_scope('user', p_user_id, NULL, p_source, p_request_id);

    -- SECURITY: the consent check lives here, next to the secret, so no
    -- caller of this function skips it. A trusted caller (the API says so
    -- for tokens configured trusted) without a grant is recorded as such.
    IF p_trusted AND p_grant_hash IS NULL THEN
        v_grant := '{"trusted":true}';
    ELSE
        IF p_grant_hash IS NULL THEN
            v_reason := 'grant_required';
        ELSE
            -- Row-level security (user scope) hides every other user's grant too.
            SELECT gr.id, gr.kind, gr.workflow, gr.services, gr.expires_at, gr.revoked_at INTO g
            FROM otobot.grants gr
            WHERE gr.token_hash = p_grant_hash AND gr.user_id = p_user_id;
            v_grant_id := g.id;
            IF NOT FOUND THEN
                v_reason := 'unknown';
            ELSIF g.revoked_at IS NOT NULL THEN
                v_reason := 'revoked';
            ELSIF g.expires_at <= pg_catalog.now() THEN
                v_reason := 'expired';
            ELSIF NOT (p_service_code = ANY (g.services)) THEN
                v_reason := 'service_not_covered';
            END IF;
        END IF;
        IF v_reason IS NOT NULL THEN
            RETURN otobot.refuse_credentials(p_user_id, p_service_code, p_connection_id, p_grant_hash, v_grant_id,
                                             v_reason, p_source, p_request_id);
        END IF;
        v_grant := pg_catalog.jsonb_build_object('grant_id', g.id, 'grant_kind', g.kind, 'workflow', g.workflow);
    END IF;

    SELECT cc.id, cc.client_id, cc.credential_type, cc.encrypted_access_token, cc.label, cc.status,
           cc.account_identifier, cc.token_expires_at, cc.scopes, cc.encrypted_refresh_token IS NOT NULL AS refreshable
    INTO c
    FROM otobot.client_connections cc
    JOIN otobot.services s ON s.id = cc.service_id
    WHERE cc.user_id = p_user_id AND s.service_code = p_service_code
      AND cc.is_active AND cc.status IN ('active', 'expired')
      -- SECURITY: a deactivated user or client gets nothing, even if a
      -- connection was left active by a manual change.
      AND EXISTS (SELECT 1 FROM otobot.users u JOIN otobot.clients cl ON cl.id = u.client_id
                  WHERE u.id = cc.user_id AND u.is_active AND cl.is_active)
      AND (p_connection_id IS NULL OR cc.id = p_connection_id)
      AND (p_label IS NULL OR cc.label = p_label)
    ORDER BY cc.status = 'active' DESC, cc.updated_at DESC
    LIMIT 1;
    IF NOT FOUND THEN
        PERFORM otobot.write_audit('credential_not_found', p_connection_id, p_user_id, NULL, p_service_code,
                                   pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('label', p_label)) || v_grant);
        RETURN pg_catalog.jsonb_build_object('hasCredentials', false, 'code', 'connection_not_found');
    END IF;
    v_meta := pg_catalog.jsonb_build_object(
        'accountIdentifier', c.account_identifier,
        'label', c.label,
        'tokenExpired', c.status = 'expired' OR (c.token_expires_at IS NOT NULL AND c.token_expires_at <= pg_catalog.now()),
        'expiresAt', c.token_expires_at,
        'scopes', pg_catalog.to_jsonb(c.scopes));
    IF c.status = 'expired' THEN
        PERFORM otobot.write_audit('credential_expired', c.id, p_user_id, c.client_id, p_service_code, v_grant);
        RETURN pg_catalog.jsonb_build_object('hasCredentials', false, 'code', 'connection_expired',
                                             'connectionId', c.id, 'service', p_service_code,
                                             'metadata', v_meta || '{"status":"expired"}');
    END IF;
    IF p_refresh_margin_seconds IS NOT NULL AND c.refreshable AND c.token_expires_at IS NOT NULL
       AND c.token_expires_at <= pg_catalog.now() + pg_catalog.make_interval(secs => p_refresh_margin_seconds) THEN
        RETURN pg_catalog.jsonb_build_object('hasCredentials', false, 'code', 'refresh_required', 'connectionId', c.id);
    END IF;

    v_secret := otobot.try_decrypt(c.encrypted_access_token, c.id::text || ':encrypted_access_token');
    IF v_secret IS NULL THEN
        -- SECURITY: the failure is recorded and committed; no secret leaves.
        PERFORM otobot.write_audit('decrypt_failed', c.id, p_user_id, c.client_id, p_service_code,
                                   '{"column":"encrypted_access_token"}'::jsonb || v_grant);
        RETURN pg_catalog.jsonb_build_object('hasCredentials', false, 'code', 'decryption_failed',
                                             'connectionId', c.id);
    END IF;

    -- SECURITY: same transaction as the read: no audit row, no secret. The
    -- row names the grant that allowed it (the chain covers detail).
    PERFORM otobot.write_audit('credential_read', c.id, p_user_id, c.client_id, p_service_code, v_grant);
    RETURN pg_catalog.jsonb_build_object(
        'connectionId', c.id,
        'service', p_service_code,
        'hasCredentials', true,
        'credentials', CASE c.credential_type
            WHEN 'api_key' THEN pg_catalog.jsonb_build_object('apiKey', v_secret, 'tokenType', 'api_key')
            ELSE pg_catalog.jsonb_build_object('accessToken', v_secret, 'tokenType', 'Bearer') END,
        'metadata', v_meta);
END
$$;
COMMENT ON FUNCTION otobot.get_user_credentials(uuid, text, bytea, boolean, uuid, text, text, text, integer) IS
    'Decrypts one user''s access token or API key for a service (never the refresh token) when the grant '
    '(SHA-256 of its token) is that user''s, live and covers the service, or the caller is trusted; audits the '
    'read with the grant. hasCredentials=false with code grant_required, grant_invalid (reason), '
    'connection_not_found, connection_expired, refresh_required or decryption_failed.';

-- ---------------------------------------------------------------------------
-- Privileges
-- ---------------------------------------------------------------------------
REVOKE EXECUTE ON FUNCTION
    otobot.grant_change_guard(),
    otobot.audit_grant_change(),
    otobot.check_grant_input(bytea, text),
    otobot.grant_services(text[]),
    otobot.grant_json(otobot.grants),
    otobot.mint_run_grant(uuid, text, text[], bytea, integer, text, text),
    otobot.create_standing_grant(uuid, text, text[], bytea, timestamptz, text, text),
    otobot.list_grants(uuid, boolean),
    otobot.revoke_grant(uuid, uuid, text, text),
    otobot.get_user_credentials(uuid, text, bytea, boolean, uuid, text, text, text, integer),
    otobot.refuse_credentials(uuid, text, uuid, bytea, uuid, text, text, text)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    otobot.mint_run_grant(uuid, text, text[], bytea, integer, text, text),
    otobot.create_standing_grant(uuid, text, text[], bytea, timestamptz, text, text),
    otobot.list_grants(uuid, boolean),
    otobot.get_user_credentials(uuid, text, bytea, boolean, uuid, text, text, text, integer)
TO otobot_api;
GRANT EXECUTE ON FUNCTION otobot.revoke_grant(uuid, uuid, text, text) TO otobot_api, otobot_dba;
