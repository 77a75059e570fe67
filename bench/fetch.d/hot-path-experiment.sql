-- bench/fetch.d/hot-path-experiment.sql: a WHAT-IF experiment for bench/fetch
-- (`bench/fetch --extra-sql bench/fetch.d/hot-path-experiment.sql`), applied
-- as superuser to the scratch database after the migrations. It is not a
-- migration: it shows what two behaviour-preserving changes to the hot path
-- of GET /api/internal/user/{id}/credentials/{service} are worth.
--
-- 1. The row-level-security helpers scope_user(), scope_client() and
--    scope_kind() lose their `SET search_path = ''` clause. A SQL function with
--    a SET clause is never inlined: every policy check then calls it through
--    fmgr_security_definer (GUC nest level, search_path switch, AtEOXact_GUC
--    over every GUC) and fmgr_sql (parse + plan of its body, per query). The
--    bodies are fully schema-qualified (pg_catalog.current_setting,
--    pg_catalog.uuid), so once inlined they resolve to the same objects.
-- 2. get_user_credentials() (whichever version the migrations installed)
--    writes its credential_read audit row with an INSERT of its own instead of
--    PERFORM otobot.write_audit(...): a LANGUAGE sql function called from
--    PL/pgSQL is parsed, analysed and planned again on every call in
--    PostgreSQL 15; a PL/pgSQL statement's plan is cached. p_source and
--    p_request_id are what begin_scope() validated and write_audit() reads.
--
-- Measured effect: see bench/README.md, section "fetch".
SET ROLE otobot_owner;

CREATE OR REPLACE FUNCTION otobot.scope_user() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT NULLIF(pg_catalog.current_setting('otobot.user_id', true), '')::pg_catalog.uuid $$;
ALTER FUNCTION otobot.scope_user() RESET ALL;

CREATE OR REPLACE FUNCTION otobot.scope_client() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT NULLIF(pg_catalog.current_setting('otobot.client_id', true), '')::pg_catalog.uuid $$;
ALTER FUNCTION otobot.scope_client() RESET ALL;

CREATE OR REPLACE FUNCTION otobot.scope_kind() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT COALESCE(pg_catalog.current_setting('otobot.scope', true), '') $$;
ALTER FUNCTION otobot.scope_kind() RESET ALL;

DO $experiment$
DECLARE
    f   regprocedure;
    def text;
    old text := $old$PERFORM otobot.write_audit('credential_read', c.id, p_user_id, c.client_id, p_service_code, v_grant);$old$;
    new text := $new$INSERT INTO otobot.credential_access_logs
        (client_connection_id, user_id, client_id, service_code, source, action, request_id, detail)
    VALUES (c.id, p_user_id, c.client_id, p_service_code, p_source, 'credential_read', p_request_id, v_grant);$new$;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
             WHERE p.proname = 'get_user_credentials' AND p.pronamespace = 'otobot'::regnamespace
    LOOP
        def := pg_catalog.pg_get_functiondef(f);
        IF pg_catalog.strpos(def, old) = 0 THEN
            RAISE EXCEPTION 'hot-path-experiment: % has no "%" line to replace', f, old;
        END IF;
        EXECUTE pg_catalog.replace(def, old, new);
        RAISE NOTICE 'hot-path-experiment: % now inserts its credential_read row itself', f;
    END LOOP;
    IF f IS NULL THEN
        RAISE EXCEPTION 'hot-path-experiment: otobot.get_user_credentials not found';
    END IF;
END
$experiment$;

RESET ROLE;
