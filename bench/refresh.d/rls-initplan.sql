-- What-if for bench/refresh (--extra-sql): every row-level security policy
-- of schema otobot calls otobot.scope_kind() / scope_user() / scope_client()
-- through a scalar subquery, `(SELECT otobot.scope_kind())`, instead of
-- directly. Same meaning (the functions are STABLE: one value per
-- statement), but PostgreSQL then computes each once per statement (an
-- InitPlan) instead of once per row, and, with cheap quals, plans
-- claim_expiring's candidate query as an ordered index scan that stops at
-- LIMIT instead of reading, filtering and sorting every due connection.
--
-- Measured (30,000 connections, 10,000 due, as otobot_owner in scope
-- 'system'): candidate query 39 ms (bitmap scan of all 10,000 due rows,
-- ~10,000 scope_kind() calls, sort) -> 0.2 ms (index scan, 100 rows);
-- claim_expiring 40-90 ms -> 10-16 ms per batch of 100.
DO $$
DECLARE
    p record;
    q text;
    c text;
BEGIN
    FOR p IN SELECT schemaname, tablename, policyname, qual, with_check
             FROM pg_catalog.pg_policies
             WHERE schemaname = 'otobot'
               AND (qual ~ 'scope_(kind|user|client)\(\)' OR with_check ~ 'scope_(kind|user|client)\(\)') LOOP
        -- pg_policies prints otobot.scope_kind() or scope_kind(), per search_path.
        q := pg_catalog.regexp_replace(p.qual, '(otobot\.)?scope_(kind|user|client)\(\)', '(SELECT otobot.scope_\2())', 'g');
        c := pg_catalog.regexp_replace(p.with_check, '(otobot\.)?scope_(kind|user|client)\(\)', '(SELECT otobot.scope_\2())', 'g');
        EXECUTE pg_catalog.format('ALTER POLICY %I ON %I.%I', p.policyname, p.schemaname, p.tablename)
             || CASE WHEN q IS NOT NULL THEN ' USING (' || q || ')' ELSE '' END
             || CASE WHEN c IS NOT NULL THEN ' WITH CHECK (' || c || ')' ELSE '' END;
    END LOOP;
END
$$;
