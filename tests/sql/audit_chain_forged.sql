-- A row slipped in behind the sealer (forged xid) is detected.
SELECT test.load_keys();
SET ROLE otobot_api;
SELECT otobot.store_api_key('a0000000-0000-0000-0000-00000000000a', 'openai', 'sk-test', NULL, NULL, 'test', NULL);
SELECT test.seal_all();
RESET ROLE;
INSERT INTO otobot.credential_access_logs (source, action, xid)
SELECT 'n8n', 'credential_read', '3'::xid8;
DO $$
DECLARE r record;
BEGIN
    SELECT * INTO r FROM otobot.verify_audit_chain();
    ASSERT NOT r.ok AND r.problem LIKE '%inserted out of band%', 'forged row detected: ' || coalesce(r.problem, 'none');
END $$;
