-- otobot 0.1.0 → 0.2.0 (run by migrations/0008: ALTER EXTENSION otobot UPDATE TO '0.2.0').
-- A fresh CREATE EXTENSION at 0.2.0 gives the same objects (tested by
-- api/tests/extension_upgrade.rs). New in the library: the otobot.* settings
-- are defined superuser-only with the prefix reserved; a key-holding backend
-- is not dumpable; loading a key version never registers it.
\echo Use "ALTER EXTENSION otobot UPDATE TO '0.2.0'" to load this file. \quit

-- Who registered each key version. Versions recorded before 0.2.0 were
-- recorded by whichever session first loaded them.
ALTER TABLE @extschema@.key_versions ADD COLUMN registered_by text NOT NULL DEFAULT session_user;
UPDATE @extschema@.key_versions SET registered_by = '(first load, before 0.2.0)';
COMMENT ON TABLE @extschema@.key_versions IS
    'Otobot key check values (HKDF of each master key version, never the key itself), registered by an owner.';

-- First registration of a key version: owners only (the migrations grant it
-- to otobot_owner; superusers always may).
CREATE FUNCTION @extschema@.otobot_register_key(
	"version" INT,
	"key" bytea
) RETURNS bool
STRICT VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'otobot_register_key_wrapper';
REVOKE ALL ON FUNCTION @extschema@.otobot_register_key(integer, bytea) FROM PUBLIC;
COMMENT ON FUNCTION @extschema@.otobot_register_key(integer, bytea) IS
    'Register the check value of a key version (owners only: otobot migrate, rotate-key); true when newly registered.';
COMMENT ON FUNCTION @extschema@.otobot_load_key(integer, bytea, boolean) IS
    'Load a registered key version into this session''s keyring after checking it against key_versions.';
