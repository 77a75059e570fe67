-- ============================================================================
-- 0002 — tenancy: clients → users → connections, the service catalogue,
-- the append-only audit log and its chain, row-level security.
-- ============================================================================
SET LOCAL ROLE otobot_owner;

-- ---------------------------------------------------------------------------
-- Session scope
--
-- Every SECURITY DEFINER function states whose data it works on, with
-- transaction-local settings that the policies read:
--   otobot.scope      'user' | 'admin' | 'system'
--   otobot.user_id    the user a 'user' or 'admin' scope acts for
--   otobot.client_id  that user's client
-- A function with a SET clause (all of ours pin search_path) restores these
-- at exit, so a scope never outlives the call that set it.
-- ---------------------------------------------------------------------------
-- No SET clause and fully qualified bodies: the planner inlines them into
-- every policy (a SET clause would force a real call per row).
CREATE FUNCTION otobot.scope_user() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT NULLIF(pg_catalog.current_setting('otobot.user_id', true), '')::pg_catalog.uuid $$;

CREATE FUNCTION otobot.scope_client() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT NULLIF(pg_catalog.current_setting('otobot.client_id', true), '')::pg_catalog.uuid $$;

CREATE FUNCTION otobot.scope_kind() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT COALESCE(pg_catalog.current_setting('otobot.scope', true), '') $$;

COMMENT ON FUNCTION otobot.scope_user() IS 'The user id of the current Otobot scope, or NULL.';
COMMENT ON FUNCTION otobot.scope_client() IS 'The client id of the current Otobot scope, or NULL.';
COMMENT ON FUNCTION otobot.scope_kind() IS 'The current Otobot scope: user, admin, system, or empty.';

-- ---------------------------------------------------------------------------
-- Clients (companies) and their users
-- ---------------------------------------------------------------------------
CREATE TABLE otobot.clients (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_name  text NOT NULL CHECK (length(company_name) BETWEEN 1 AND 200),
    email         text NOT NULL CHECK (length(email) BETWEEN 3 AND 320 AND email LIKE '%_@_%'),
    password_hash text,
    is_active     boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX clients_email_key ON otobot.clients (lower(email));
COMMENT ON TABLE otobot.clients IS 'Otobot tenants (companies). A client account logs in as its own admin.';
COMMENT ON COLUMN otobot.clients.password_hash IS 'argon2id (or a legacy bcrypt $2a$/$2b$ hash, upgraded at login).';

CREATE TABLE otobot.users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id     uuid NOT NULL REFERENCES otobot.clients (id),
    email         text NOT NULL CHECK (length(email) BETWEEN 3 AND 320 AND email LIKE '%_@_%'),
    password_hash text,
    role          text NOT NULL DEFAULT 'user' CHECK (role IN ('admin', 'user')),
    is_active     boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (id, client_id)
);
CREATE UNIQUE INDEX users_email_key ON otobot.users (lower(email));
CREATE INDEX users_client_idx ON otobot.users (client_id);
COMMENT ON TABLE otobot.users IS 'People of a client; workflows act in their name.';

-- ---------------------------------------------------------------------------
-- Service catalogue
-- ---------------------------------------------------------------------------
CREATE TABLE otobot.services (
    id              integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service_code    text NOT NULL UNIQUE CHECK (service_code ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    display_name    text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 100),
    auth_type       text NOT NULL CHECK (auth_type IN ('oauth2', 'api_key')),
    accepts_api_key boolean NOT NULL DEFAULT false,
    config          jsonb NOT NULL DEFAULT '{}',
    is_active       boolean NOT NULL DEFAULT true,
    CHECK (auth_type = 'oauth2' OR accepts_api_key)
);
COMMENT ON TABLE otobot.services IS
    'Services a user can connect. auth_type is the primary method; accepts_api_key allows an API key too (e.g. Notion internal integrations).';

INSERT INTO otobot.services (service_code, display_name, auth_type, accepts_api_key) VALUES
    ('google',    'Google',          'oauth2',  false),
    ('microsoft', 'Microsoft',       'oauth2',  false),
    ('notion',    'Notion',          'oauth2',  true),
    ('slack',     'Slack',           'oauth2',  false),
    ('github',    'GitHub',          'oauth2',  true),
    ('airtable',  'Airtable',        'oauth2',  true),
    ('openai',    'OpenAI',          'api_key', true);

-- ---------------------------------------------------------------------------
-- Connections: one user's account at one service, tokens encrypted
-- ---------------------------------------------------------------------------
CREATE TABLE otobot.client_connections (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id               uuid NOT NULL,
    user_id                 uuid NOT NULL,
    service_id              integer NOT NULL REFERENCES otobot.services (id),
    credential_type         text NOT NULL CHECK (credential_type IN ('oauth2', 'api_key')),
    label                   text CHECK (length(label) BETWEEN 1 AND 100),
    account_identifier      text CHECK (length(account_identifier) BETWEEN 1 AND 320),
    -- version:iv:tag:ciphertext, AAD '<id>:encrypted_access_token'
    encrypted_access_token  text NOT NULL,
    -- version:iv:tag:ciphertext, AAD '<id>:encrypted_refresh_token'
    encrypted_refresh_token text,
    token_expires_at        timestamptz,
    scopes                  text[] NOT NULL DEFAULT '{}',
    status                  text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'expired', 'revoked')),
    is_active               boolean NOT NULL DEFAULT true,
    last_refreshed_at       timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (user_id, client_id) REFERENCES otobot.users (id, client_id),
    CHECK (is_active OR status = 'revoked')
);
-- One active connection per (user, service, label); several labels per service.
CREATE UNIQUE INDEX client_connections_one_per_label
    ON otobot.client_connections (user_id, service_id, coalesce(label, ''))
    WHERE is_active;
CREATE INDEX client_connections_client_idx ON otobot.client_connections (client_id);
CREATE INDEX client_connections_expiring_idx ON otobot.client_connections (token_expires_at)
    WHERE is_active AND credential_type = 'oauth2' AND status = 'active';
COMMENT ON TABLE otobot.client_connections IS
    'A user''s connected account at a service. Tokens are AES-256-GCM ciphertext bound to (id, column).';

CREATE FUNCTION otobot.touch_updated_at() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
BEGIN
    NEW.updated_at := pg_catalog.now();
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION otobot.touch_updated_at() IS 'Keeps client_connections.updated_at current.';
CREATE TRIGGER client_connections_touch BEFORE UPDATE ON otobot.client_connections
    FOR EACH ROW EXECUTE FUNCTION otobot.touch_updated_at();

-- ---------------------------------------------------------------------------
-- Audit log: append-only; sealed into a keyed chain off the hot path
-- ---------------------------------------------------------------------------
CREATE TABLE otobot.credential_access_logs (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_connection_id uuid,
    user_id              uuid,
    client_id            uuid,
    service_code         text,
    source               text NOT NULL CHECK (source ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    action               text NOT NULL CHECK (action ~ '^[a-z][a-z_]{0,63}$'),
    request_id           text CHECK (length(request_id) <= 128),
    db_role              text NOT NULL DEFAULT session_user,
    detail               jsonb NOT NULL DEFAULT '{}',
    created_at           timestamptz NOT NULL DEFAULT now(),
    -- The writing transaction: the sealer chains a row once no older
    -- transaction can still commit.
    xid                  xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX credential_access_logs_xid_idx ON otobot.credential_access_logs (xid, id);
CREATE INDEX credential_access_logs_connection_idx
    ON otobot.credential_access_logs (client_connection_id, created_at);
COMMENT ON TABLE otobot.credential_access_logs IS
    'Append-only audit log: every secret read, every connection change, every failed decryption.';

-- Sealed links, in sealing order: mac = HMAC(chain key, prev mac || row).
CREATE TABLE otobot.audit_chain (
    seq         bigint PRIMARY KEY CHECK (seq >= 1),
    log_id      bigint NOT NULL UNIQUE,
    key_version integer NOT NULL,
    mac         bytea NOT NULL CHECK (octet_length(mac) = 32),
    sealed_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE otobot.audit_chain IS
    'Keyed hash chain over credential_access_logs, appended by otobot.seal_audit_chain().';

-- The sealer's position. Rewriting it cannot hide anything: verification
-- recomputes the chain from audit_chain and the log.
CREATE TABLE otobot.audit_chain_head (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_seq   bigint NOT NULL DEFAULT 0,
    last_mac   bytea NOT NULL DEFAULT '\x',
    cursor_xid xid8 NOT NULL DEFAULT '0',
    cursor_id  bigint NOT NULL DEFAULT 0,
    sealed_at  timestamptz
);
INSERT INTO otobot.audit_chain_head DEFAULT VALUES;
COMMENT ON TABLE otobot.audit_chain_head IS 'Where the audit sealer stopped: last link and last sealed (xid, id).';

CREATE FUNCTION otobot.refuse_audit_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
BEGIN
    RAISE EXCEPTION 'otobot: % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
COMMENT ON FUNCTION otobot.refuse_audit_change() IS 'Refuses UPDATE, DELETE and TRUNCATE on audit tables, for every role.';

CREATE TRIGGER credential_access_logs_append_only
    BEFORE UPDATE OR DELETE ON otobot.credential_access_logs
    FOR EACH ROW EXECUTE FUNCTION otobot.refuse_audit_change();
CREATE TRIGGER credential_access_logs_no_truncate
    BEFORE TRUNCATE ON otobot.credential_access_logs
    FOR EACH STATEMENT EXECUTE FUNCTION otobot.refuse_audit_change();
CREATE TRIGGER audit_chain_append_only
    BEFORE UPDATE OR DELETE ON otobot.audit_chain
    FOR EACH ROW EXECUTE FUNCTION otobot.refuse_audit_change();
CREATE TRIGGER audit_chain_no_truncate
    BEFORE TRUNCATE ON otobot.audit_chain
    FOR EACH STATEMENT EXECUTE FUNCTION otobot.refuse_audit_change();

-- ---------------------------------------------------------------------------
-- Row-level security, enabled and forced on every tenant table
-- ---------------------------------------------------------------------------
ALTER TABLE otobot.clients                ENABLE ROW LEVEL SECURITY;
ALTER TABLE otobot.clients                FORCE ROW LEVEL SECURITY;
ALTER TABLE otobot.users                  ENABLE ROW LEVEL SECURITY;
ALTER TABLE otobot.users                  FORCE ROW LEVEL SECURITY;
ALTER TABLE otobot.client_connections     ENABLE ROW LEVEL SECURITY;
ALTER TABLE otobot.client_connections     FORCE ROW LEVEL SECURITY;
ALTER TABLE otobot.credential_access_logs ENABLE ROW LEVEL SECURITY;
ALTER TABLE otobot.credential_access_logs FORCE ROW LEVEL SECURITY;

-- System scope: the refresher, rotation, the sealer, admin functions.
CREATE POLICY clients_system ON otobot.clients TO otobot_owner
    USING (otobot.scope_kind() = 'system') WITH CHECK (otobot.scope_kind() = 'system');
CREATE POLICY users_system ON otobot.users TO otobot_owner
    USING (otobot.scope_kind() = 'system') WITH CHECK (otobot.scope_kind() = 'system');
CREATE POLICY connections_system ON otobot.client_connections TO otobot_owner
    USING (otobot.scope_kind() = 'system') WITH CHECK (otobot.scope_kind() = 'system');
CREATE POLICY logs_system ON otobot.credential_access_logs FOR SELECT TO otobot_owner
    USING (otobot.scope_kind() = 'system');

-- A user sees and changes only their own rows.
CREATE POLICY clients_own ON otobot.clients FOR SELECT TO otobot_owner
    USING (id = otobot.scope_client());
CREATE POLICY users_own ON otobot.users FOR SELECT TO otobot_owner
    USING (id = otobot.scope_user());
CREATE POLICY connections_own ON otobot.client_connections TO otobot_owner
    USING (user_id = otobot.scope_user()) WITH CHECK (user_id = otobot.scope_user());
CREATE POLICY logs_own ON otobot.credential_access_logs FOR SELECT TO otobot_owner
    USING (user_id = otobot.scope_user());

-- A client admin sees their client's users and connection metadata, and may
-- deactivate them.
CREATE POLICY users_client_admin ON otobot.users TO otobot_owner
    USING (otobot.scope_kind() = 'admin' AND client_id = otobot.scope_client())
    WITH CHECK (otobot.scope_kind() = 'admin' AND client_id = otobot.scope_client());
CREATE POLICY connections_client_admin_read ON otobot.client_connections FOR SELECT TO otobot_owner
    USING (otobot.scope_kind() = 'admin' AND client_id = otobot.scope_client());
CREATE POLICY connections_client_admin_update ON otobot.client_connections FOR UPDATE TO otobot_owner
    USING (otobot.scope_kind() = 'admin' AND client_id = otobot.scope_client())
    WITH CHECK (otobot.scope_kind() = 'admin' AND client_id = otobot.scope_client());
CREATE POLICY logs_client_admin ON otobot.credential_access_logs FOR SELECT TO otobot_owner
    USING (otobot.scope_kind() = 'admin' AND client_id = otobot.scope_client());

-- Any scope may append to the audit log (the append-only trigger does the rest).
CREATE POLICY logs_append ON otobot.credential_access_logs FOR INSERT TO otobot_owner
    WITH CHECK (true);

-- Auditors read everything they are granted columns of.
CREATE POLICY clients_auditor ON otobot.clients FOR SELECT TO otobot_auditor USING (true);
CREATE POLICY users_auditor ON otobot.users FOR SELECT TO otobot_auditor USING (true);
CREATE POLICY connections_auditor ON otobot.client_connections FOR SELECT TO otobot_auditor USING (true);
CREATE POLICY logs_auditor ON otobot.credential_access_logs FOR SELECT TO otobot_auditor USING (true);

-- ---------------------------------------------------------------------------
-- Table privileges
-- SECURITY: otobot_api has no table privilege at all; it reaches data only
-- through SECURITY DEFINER functions. The auditor never gets a ciphertext or
-- password-hash column.
-- ---------------------------------------------------------------------------
REVOKE ALL ON otobot.clients, otobot.users, otobot.services, otobot.client_connections,
    otobot.credential_access_logs, otobot.audit_chain, otobot.audit_chain_head FROM PUBLIC;

GRANT SELECT (id, company_name, email, is_active, created_at) ON otobot.clients TO otobot_auditor;
GRANT SELECT (id, client_id, email, role, is_active, created_at) ON otobot.users TO otobot_auditor;
GRANT SELECT ON otobot.services TO otobot_auditor;
GRANT SELECT (id, client_id, user_id, service_id, credential_type, label, account_identifier,
              token_expires_at, scopes, status, is_active, last_refreshed_at, created_at, updated_at)
    ON otobot.client_connections TO otobot_auditor;
GRANT SELECT ON otobot.credential_access_logs, otobot.audit_chain, otobot.audit_chain_head TO otobot_auditor;

-- SECURITY: the audit tables are append-only for their owner too: the
-- privilege is gone, and the trigger refuses whoever still has it.
REVOKE UPDATE, DELETE, TRUNCATE ON otobot.credential_access_logs, otobot.audit_chain FROM otobot_owner;

-- Functions created by otobot_owner in this schema are not executable by PUBLIC.
ALTER DEFAULT PRIVILEGES FOR ROLE otobot_owner IN SCHEMA otobot REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION otobot.scope_user(), otobot.scope_client(), otobot.scope_kind(),
    otobot.touch_updated_at(), otobot.refuse_audit_change() FROM PUBLIC;
-- The scope helpers are needed by the policies of every role that reads tables.
GRANT EXECUTE ON FUNCTION otobot.scope_user(), otobot.scope_client(), otobot.scope_kind()
    TO otobot_auditor;
