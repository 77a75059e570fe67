-- ============================================================================
-- Bootstrap: the administrator role, the API's login role and the vault
-- database. Run as the `postgres` superuser (scripts/setup.sh does), with the
-- passwords taken from the environment (.env), never from the command line:
--   POSTGRES_USER, POSTGRES_PASSWORD, FRONTEND_DB_NAME, FRONTEND_DB_PASSWORD
-- Idempotent: re-running re-applies the passwords of .env.
-- ============================================================================
\getenv admin_user POSTGRES_USER
\getenv admin_password POSTGRES_PASSWORD
\getenv db_name FRONTEND_DB_NAME
\getenv api_password FRONTEND_DB_PASSWORD

-- SECURITY: these statements carry passwords: keep them out of the server log.
SET log_statement = 'none';
SET log_min_duration_statement = -1;
SET log_min_error_statement = 'panic';

SELECT pg_catalog.format('CREATE ROLE %I LOGIN SUPERUSER', :'admin_user')
WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = :'admin_user') \gexec
ALTER ROLE :"admin_user" WITH LOGIN SUPERUSER PASSWORD :'admin_password';
COMMENT ON ROLE :"admin_user" IS 'Otobot administrator: runs migrations and DBA scripts.';

-- The API's login; migration 0001 sets its privileges and settings.
SELECT 'CREATE ROLE otobot_api LOGIN'
WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'otobot_api') \gexec
ALTER ROLE otobot_api WITH LOGIN PASSWORD :'api_password';

SELECT pg_catalog.format('CREATE DATABASE %I OWNER %I', :'db_name', :'admin_user')
WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = :'db_name') \gexec
-- Only the vault's roles may connect to the vault database.
SELECT pg_catalog.format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', :'db_name') \gexec
SELECT pg_catalog.format('GRANT CONNECT ON DATABASE %I TO otobot_api', :'db_name') \gexec
