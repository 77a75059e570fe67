-- ============================================================================
-- 0005 — the user side: login, user administration, client-wide views,
-- workflow runs. Passwords are hashed by the API (argon2id); the database
-- stores and hands back only hashes.
-- ============================================================================
SET LOCAL ROLE otobot_owner;

-- ---------------------------------------------------------------------------
-- Login
-- ---------------------------------------------------------------------------

-- The account an email logs in to: a user with a password, else a client
-- (company) account, which logs in as its client's admin.
CREATE FUNCTION otobot.auth_lookup(p_email text)
    RETURNS TABLE (kind text, principal_id uuid, password_hash text, is_active boolean)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    PERFORM otobot.begin_scope('system', NULL, NULL, 'api', NULL);
    RETURN QUERY
        (SELECT 'user'::text, u.id, u.password_hash, u.is_active AND c.is_active
         FROM otobot.users u JOIN otobot.clients c ON c.id = u.client_id
         WHERE pg_catalog.lower(u.email) = pg_catalog.lower(p_email) AND u.password_hash IS NOT NULL)
        UNION ALL
        (SELECT 'client'::text, c.id, c.password_hash, c.is_active
         FROM otobot.clients c
         WHERE pg_catalog.lower(c.email) = pg_catalog.lower(p_email) AND c.password_hash IS NOT NULL)
        LIMIT 1;
END
$$;
COMMENT ON FUNCTION otobot.auth_lookup(text) IS
    'The password hash and state of the account an email logs in to (user first, else client account).';

-- A successful login: upgrades the hash when the API re-hashed it, makes
-- sure a client account has its admin user, audits, returns the profile.
CREATE FUNCTION otobot.login_succeeded(p_kind text, p_principal_id uuid, p_new_hash text,
                                       p_source text, p_request_id text)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_user otobot.users;
    v_client otobot.clients;
BEGIN
    PERFORM otobot.begin_scope('system', NULL, NULL, p_source, p_request_id);
    IF p_kind = 'user' THEN
        IF p_new_hash IS NOT NULL THEN
            UPDATE otobot.users SET password_hash = p_new_hash WHERE id = p_principal_id;
        END IF;
        SELECT * INTO v_user FROM otobot.users WHERE id = p_principal_id AND is_active;
    ELSIF p_kind = 'client' THEN
        SELECT * INTO v_client FROM otobot.clients WHERE id = p_principal_id AND is_active;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'otobot: user not found or inactive' USING ERRCODE = 'no_data_found';
        END IF;
        IF p_new_hash IS NOT NULL THEN
            UPDATE otobot.clients SET password_hash = p_new_hash WHERE id = p_principal_id;
        END IF;
        -- The client account acts as its client's admin user (same email).
        SELECT * INTO v_user FROM otobot.users
        WHERE client_id = v_client.id AND pg_catalog.lower(email) = pg_catalog.lower(v_client.email);
        IF NOT FOUND THEN
            INSERT INTO otobot.users (client_id, email, role)
            VALUES (v_client.id, v_client.email, 'admin')
            RETURNING * INTO v_user;
            PERFORM otobot.write_audit('user_created', NULL, v_user.id, v_client.id, NULL,
                                       '{"role":"admin","for":"client account"}');
        END IF;
    ELSE
        RAISE EXCEPTION 'otobot: invalid account kind' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_user.id IS NULL OR NOT v_user.is_active THEN
        RAISE EXCEPTION 'otobot: user not found or inactive' USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM otobot.write_audit('login_succeeded', NULL, v_user.id, v_user.client_id, NULL,
                               pg_catalog.jsonb_build_object('account', p_kind));
    RETURN otobot.user_json(v_user.id);
END
$$;
COMMENT ON FUNCTION otobot.login_succeeded(text, uuid, text, text, text) IS
    'Records a successful login (audited), upgrading the stored hash if given; returns the user profile.';

CREATE FUNCTION otobot.login_failed(p_email text, p_source text, p_request_id text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    PERFORM otobot.begin_scope('system', NULL, NULL, p_source, p_request_id);
    -- SECURITY: the attempted email is kept as a digest: a password typed
    -- into the email field must not land in the log.
    PERFORM otobot.write_audit('login_failed', NULL, NULL, NULL, NULL,
        pg_catalog.jsonb_build_object('email_sha256',
            pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(pg_catalog.lower(COALESCE(p_email, '')), 'UTF8')), 'hex')));
END
$$;
COMMENT ON FUNCTION otobot.login_failed(text, text, text) IS 'Audits a failed login (email kept as a SHA-256 digest).';

-- ---------------------------------------------------------------------------
-- Profiles and user administration
-- ---------------------------------------------------------------------------

-- Profile JSON of a user (no hash). Internal: call in a scope that sees the user.
CREATE FUNCTION otobot.user_json(p_user_id uuid) RETURNS jsonb
    LANGUAGE sql STABLE
AS $$
    SELECT pg_catalog.jsonb_build_object(
        'id', u.id, 'clientId', u.client_id, 'email', u.email, 'role', u.role,
        'isActive', u.is_active, 'createdAt', u.created_at, 'companyName', c.company_name)
    FROM otobot.users u JOIN otobot.clients c ON c.id = u.client_id
    WHERE u.id = p_user_id
$$;
COMMENT ON FUNCTION otobot.user_json(uuid) IS 'A user''s profile as JSON, without its password hash.';

-- The actor of a user-side call, in system scope; raises when inactive.
-- Then switches to the actor's own scope (user or admin of its client).
CREATE FUNCTION otobot.begin_actor(p_actor_user_id uuid, p_source text, p_request_id text,
                                   OUT client_id uuid, OUT role text)
    LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v record;
BEGIN
    PERFORM otobot.begin_scope('system', NULL, NULL, p_source, p_request_id);
    v := otobot.active_user(p_actor_user_id);
    client_id := v.client_id;
    role := v.role;
    PERFORM otobot.begin_scope(CASE v.role WHEN 'admin' THEN 'admin' ELSE 'user' END,
                               p_actor_user_id, v.client_id, p_source, p_request_id);
END
$$;
COMMENT ON FUNCTION otobot.begin_actor(uuid, text, text) IS
    'Checks that the acting user is active and scopes the rest of the call to them.';

CREATE FUNCTION otobot.user_profile(p_user_id uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    PERFORM otobot.begin_scope('system', NULL, NULL, 'api', NULL);
    RETURN (SELECT otobot.user_json(u.id)
            FROM otobot.users u JOIN otobot.clients c ON c.id = u.client_id
            WHERE u.id = p_user_id AND u.is_active AND c.is_active);
END
$$;
COMMENT ON FUNCTION otobot.user_profile(uuid) IS 'The profile of an active user, or NULL.';

CREATE FUNCTION otobot.create_client(p_company_name text, p_email text, p_password_hash text,
                                     p_source text, p_request_id text)
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_id uuid;
BEGIN
    PERFORM otobot.begin_scope('system', NULL, NULL, p_source, p_request_id);
    INSERT INTO otobot.clients (company_name, email, password_hash)
    VALUES (p_company_name, p_email, p_password_hash)
    RETURNING id INTO v_id;
    PERFORM otobot.write_audit('client_created', NULL, NULL, v_id, NULL, '{}');
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION otobot.create_client(text, text, text, text, text) IS
    'Creates a client (company) account; it logs in as its admin. Audited.';

-- With an actor: an admin creates a user of their own client. Without one
-- (CLI, DBA): p_client_id names the client.
CREATE FUNCTION otobot.create_user(p_actor_user_id uuid, p_client_id uuid, p_email text, p_password_hash text,
                                   p_role text, p_source text, p_request_id text)
    RETURNS uuid
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_actor  record;
    v_client uuid := p_client_id;
    v_id     uuid;
BEGIN
    IF p_role IS NULL OR p_role NOT IN ('admin', 'user') THEN
        RAISE EXCEPTION 'otobot: role must be admin or user' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_actor_user_id IS NOT NULL THEN
        v_actor := otobot.begin_actor(p_actor_user_id, p_source, p_request_id);
        IF v_actor.role <> 'admin' THEN
            RAISE EXCEPTION 'otobot: only an admin may create users' USING ERRCODE = 'insufficient_privilege';
        END IF;
        v_client := v_actor.client_id;
    ELSE
        PERFORM otobot.begin_scope('system', NULL, NULL, p_source, p_request_id);
        IF NOT EXISTS (SELECT 1 FROM otobot.clients c WHERE c.id = v_client AND c.is_active) THEN
            RAISE EXCEPTION 'otobot: client not found or inactive' USING ERRCODE = 'no_data_found';
        END IF;
    END IF;
    v_id := pg_catalog.gen_random_uuid();
    INSERT INTO otobot.users (id, client_id, email, password_hash, role)
    VALUES (v_id, v_client, p_email, p_password_hash, p_role);
    PERFORM otobot.write_audit('user_created', NULL, v_id, v_client, NULL,
                               pg_catalog.jsonb_build_object('role', p_role, 'by', p_actor_user_id));
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION otobot.create_user(uuid, uuid, text, text, text, text, text) IS
    'Creates a user: by an admin of the same client, or by the CLI/DBA for a named client. Audited.';

CREATE FUNCTION otobot.list_users(p_actor_user_id uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_actor record;
BEGIN
    v_actor := otobot.begin_actor(p_actor_user_id, 'api', NULL);
    IF v_actor.role <> 'admin' THEN
        RAISE EXCEPTION 'otobot: only an admin may list users' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN COALESCE((SELECT pg_catalog.jsonb_agg(otobot.user_json(u.id) ORDER BY u.created_at, u.id)
                     FROM otobot.users u WHERE u.client_id = v_actor.client_id), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION otobot.list_users(uuid) IS 'The users of the admin''s client (no password hashes).';

CREATE FUNCTION otobot.deactivate_user(p_actor_user_id uuid, p_user_id uuid, p_source text,
                                       p_request_id text, p_reason text DEFAULT NULL)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_actor record;
    v_user  otobot.users;
BEGIN
    PERFORM otobot.check_text(p_reason, 'reason', 500);
    IF p_actor_user_id IS NOT NULL THEN
        v_actor := otobot.begin_actor(p_actor_user_id, p_source, p_request_id);
        IF v_actor.role <> 'admin' THEN
            RAISE EXCEPTION 'otobot: only an admin may deactivate users' USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF p_user_id = p_actor_user_id THEN
            RAISE EXCEPTION 'otobot: an admin cannot deactivate their own account' USING ERRCODE = 'invalid_parameter_value';
        END IF;
    ELSE
        PERFORM otobot.begin_scope('system', NULL, NULL, p_source, p_request_id);
    END IF;
    PERFORM pg_catalog.set_config('otobot.reason', COALESCE(p_reason, 'user deactivated'), true);
    -- Row-level security limits an admin to their own client.
    UPDATE otobot.users u SET is_active = false WHERE u.id = p_user_id AND u.is_active RETURNING * INTO v_user;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- Their connections go with them (each audited by the trigger).
    PERFORM pg_catalog.set_config('otobot.scope', 'system', true);
    UPDATE otobot.client_connections c SET is_active = false, status = 'revoked'
    WHERE c.user_id = p_user_id AND c.is_active;
    PERFORM otobot.write_audit('user_deactivated', NULL, p_user_id, v_user.client_id, NULL,
        pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('by', p_actor_user_id, 'reason', p_reason)));
    RETURN true;
END
$$;
COMMENT ON FUNCTION otobot.deactivate_user(uuid, uuid, text, text, text) IS
    'Deactivates a user and all their connections (admin of the same client, or CLI/DBA). Audited.';

-- Connections visible to the actor: their own, or their client's for an admin.
CREATE FUNCTION otobot.list_visible_connections(p_actor_user_id uuid, p_whole_client boolean) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_actor record;
BEGIN
    v_actor := otobot.begin_actor(p_actor_user_id, 'tooljet', NULL);
    IF p_whole_client AND v_actor.role <> 'admin' THEN
        RAISE EXCEPTION 'otobot: only an admin may list the whole client''s connections' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN COALESCE((
        SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                   'id', c.id, 'userId', c.user_id, 'service_name', s.service_code,
                   'credentialType', c.credential_type, 'label', c.label,
                   'account_identifier', c.account_identifier, 'status', c.status,
                   'is_active', c.is_active, 'scopes', pg_catalog.to_jsonb(c.scopes),
                   'token_expires_at', c.token_expires_at, 'last_refreshed_at', c.last_refreshed_at,
                   'created_at', c.created_at) ORDER BY c.created_at, c.id)
        FROM otobot.client_connections c
        JOIN otobot.services s ON s.id = c.service_id
        WHERE c.is_active AND (p_whole_client OR c.user_id = p_actor_user_id)), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION otobot.list_visible_connections(uuid, boolean) IS
    'Active connections of the actor, or of their whole client for an admin; metadata only.';

-- ---------------------------------------------------------------------------
-- Workflow runs (reported by n8n when a workflow completes)
-- ---------------------------------------------------------------------------
CREATE TABLE otobot.workflow_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     uuid NOT NULL,
    client_id   uuid NOT NULL,
    workflow_id text NOT NULL CHECK (workflow_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
    status      text NOT NULL CHECK (status ~ '^[a-z][a-z_]{0,31}$'),
    results     jsonb NOT NULL DEFAULT '{}' CHECK (pg_catalog.octet_length(results::text) <= 262144),
    source      text NOT NULL,
    request_id  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (user_id, client_id) REFERENCES otobot.users (id, client_id)
);
CREATE INDEX workflow_runs_user_idx ON otobot.workflow_runs (user_id, created_at DESC);
COMMENT ON TABLE otobot.workflow_runs IS 'Workflow completions reported by n8n, shown to the user who ran them.';
ALTER TABLE otobot.workflow_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE otobot.workflow_runs FORCE ROW LEVEL SECURITY;
CREATE POLICY workflow_runs_system ON otobot.workflow_runs TO otobot_owner
    USING (otobot.scope_kind() = 'system') WITH CHECK (otobot.scope_kind() = 'system');
CREATE POLICY workflow_runs_own ON otobot.workflow_runs FOR SELECT TO otobot_owner
    USING (user_id = otobot.scope_user());
CREATE POLICY workflow_runs_auditor ON otobot.workflow_runs FOR SELECT TO otobot_auditor USING (true);
REVOKE ALL ON otobot.workflow_runs FROM PUBLIC;
GRANT SELECT ON otobot.workflow_runs TO otobot_auditor;

CREATE FUNCTION otobot.record_workflow_run(p_user_id uuid, p_workflow_id text, p_status text, p_results jsonb,
                                           p_source text, p_request_id text)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_user record;
    v_id   bigint;
BEGIN
    PERFORM otobot.begin_scope('system', NULL, NULL, p_source, p_request_id);
    v_user := otobot.active_user(p_user_id);
    INSERT INTO otobot.workflow_runs (user_id, client_id, workflow_id, status, results, source, request_id)
    VALUES (p_user_id, v_user.client_id, p_workflow_id, p_status, COALESCE(p_results, '{}'), p_source,
            NULLIF(p_request_id, ''))
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION otobot.record_workflow_run(uuid, text, text, jsonb, text, text) IS
    'Records a workflow completion for a user (called by n8n through the internal API).';

CREATE FUNCTION otobot.list_workflow_runs(p_user_id uuid, p_limit integer DEFAULT 50) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    PERFORM otobot.begin_actor(p_user_id, 'tooljet', NULL);
    RETURN COALESCE((
        SELECT pg_catalog.jsonb_agg(r ORDER BY r.created_at DESC)
        FROM (SELECT w.id, w.workflow_id AS "workflowId", w.status, w.results, w.created_at
              FROM otobot.workflow_runs w
              WHERE w.user_id = p_user_id
              ORDER BY w.created_at DESC
              LIMIT LEAST(GREATEST(COALESCE(p_limit, 50), 1), 500)) r), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION otobot.list_workflow_runs(uuid, integer) IS 'A user''s latest workflow runs.';

-- ---------------------------------------------------------------------------
-- Privileges
-- ---------------------------------------------------------------------------
REVOKE EXECUTE ON FUNCTION
    otobot.auth_lookup(text),
    otobot.login_succeeded(text, uuid, text, text, text),
    otobot.login_failed(text, text, text),
    otobot.user_json(uuid),
    otobot.begin_actor(uuid, text, text),
    otobot.user_profile(uuid),
    otobot.create_client(text, text, text, text, text),
    otobot.create_user(uuid, uuid, text, text, text, text, text),
    otobot.list_users(uuid),
    otobot.deactivate_user(uuid, uuid, text, text, text),
    otobot.list_visible_connections(uuid, boolean),
    otobot.record_workflow_run(uuid, text, text, jsonb, text, text),
    otobot.list_workflow_runs(uuid, integer)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    otobot.auth_lookup(text),
    otobot.login_succeeded(text, uuid, text, text, text),
    otobot.login_failed(text, text, text),
    otobot.user_profile(uuid),
    otobot.create_user(uuid, uuid, text, text, text, text, text),
    otobot.list_users(uuid),
    otobot.deactivate_user(uuid, uuid, text, text, text),
    otobot.list_visible_connections(uuid, boolean),
    otobot.record_workflow_run(uuid, text, text, jsonb, text, text),
    otobot.list_workflow_runs(uuid, integer)
TO otobot_api;
GRANT EXECUTE ON FUNCTION
    otobot.create_client(text, text, text, text, text),
    otobot.create_user(uuid, uuid, text, text, text, text, text),
    otobot.deactivate_user(uuid, uuid, text, text, text)
TO otobot_dba;
