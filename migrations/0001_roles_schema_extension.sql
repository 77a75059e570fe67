-- ============================================================================
-- 0001 — roles, the `otobot` schema and the vault extension
--
-- Runs as a superuser (`otobot migrate`): it creates cluster roles and a C
-- extension. Every later object is created as `otobot_owner`.
-- ============================================================================

-- ---------------------------------------------------------------------------
-- Roles, least privilege
-- ---------------------------------------------------------------------------
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'otobot_owner') THEN
        CREATE ROLE otobot_owner NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'otobot_api') THEN
        CREATE ROLE otobot_api LOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'otobot_auditor') THEN
        CREATE ROLE otobot_auditor NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'otobot_dba') THEN
        CREATE ROLE otobot_dba NOLOGIN;
    END IF;
END
$roles$;

-- SECURITY: none of these roles may bypass row-level security or administer others.
ALTER ROLE otobot_owner   NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT;
ALTER ROLE otobot_api     NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
ALTER ROLE otobot_auditor NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
ALTER ROLE otobot_dba     NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;

COMMENT ON ROLE otobot_owner IS
    'Otobot: owns the otobot schema, its tables and its SECURITY DEFINER functions. NOLOGIN.';
COMMENT ON ROLE otobot_api IS
    'Otobot: the API''s login. May only EXECUTE the API functions; cannot read any table holding ciphertext.';
COMMENT ON ROLE otobot_auditor IS
    'Otobot: reads the audit log and connection metadata, never ciphertext.';
COMMENT ON ROLE otobot_dba IS
    'Otobot: runs the audited admin functions (deactivate a connection, reveal a credential with a reason).';

-- SECURITY: the API's sessions never log statements or their parameters, so
-- a key loaded with otobot_load_key($1, $2, $3) cannot reach a server log.
ALTER ROLE otobot_api SET log_statement = 'none';
ALTER ROLE otobot_api SET log_min_duration_statement = -1;
ALTER ROLE otobot_api SET log_parameter_max_length = 0;
ALTER ROLE otobot_api SET log_parameter_max_length_on_error = 0;

-- ---------------------------------------------------------------------------
-- Schema and extension
-- ---------------------------------------------------------------------------
CREATE SCHEMA IF NOT EXISTS otobot AUTHORIZATION otobot_owner;
COMMENT ON SCHEMA otobot IS 'Otobot credential vault: tenancy, encrypted connections, audit log.';
REVOKE ALL ON SCHEMA otobot FROM PUBLIC;
GRANT USAGE ON SCHEMA otobot TO otobot_api, otobot_auditor, otobot_dba;

CREATE EXTENSION IF NOT EXISTS otobot SCHEMA otobot;

-- The extension revokes everything from PUBLIC; grant per role.
-- Encryption and the audit MAC are used only inside otobot_owner's functions.
GRANT EXECUTE ON FUNCTION
    otobot.otobot_encrypt(text, text),
    otobot.otobot_decrypt(text, text),
    otobot.otobot_reencrypt(text, text),
    otobot.otobot_audit_mac(integer, bytea),
    otobot.otobot_current_key_version(),
    otobot.otobot_key_version(text)
TO otobot_owner;
-- Every role that runs audited functions loads the keyring into its own session.
GRANT EXECUTE ON FUNCTION
    otobot.otobot_load_key(integer, bytea, boolean),
    otobot.otobot_unload_keys(),
    otobot.otobot_keyring(),
    otobot.otobot_current_key_version()
TO otobot_api, otobot_auditor, otobot_dba;

-- Unqualified names in a DBA's psql session (the seed's
-- `INSERT INTO clients (...)`) resolve to the vault schema.
DO $search_path$
BEGIN
    EXECUTE pg_catalog.format('ALTER DATABASE %I SET search_path = "$user", public, otobot',
                              pg_catalog.current_database());
END
$search_path$;
