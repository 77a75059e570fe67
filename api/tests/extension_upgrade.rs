//! Extension 0.1.0 → 0.2.0: the upgrade script gives what a fresh install
//! gives, and `otobot migrate` upgrades a database created at 0.1.0.
//! Needs `otobot--0.1.0.sql` installed next to the current one (scripts/test.sh
//! copies extension/sql/otobot--0.1.0.sql).

mod common;

use common::*;
use tokio_postgres::Client;

/// Everything the extension owns, as comparable text.
async fn describe(client: &Client) -> Vec<String> {
    let sql = "
        WITH ext AS (SELECT oid, extversion, extconfig FROM pg_extension WHERE extname = 'otobot'),
        deps AS (SELECT d.classid, d.objid FROM pg_depend d, ext
                 WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e')
        SELECT 'version ' || extversion FROM ext
        UNION ALL
        SELECT 'config ' || c::regclass::text FROM ext, unnest(extconfig) c
        UNION ALL
        SELECT format('function %s returns %s secdef=%s config=%s volatile=%s parallel=%s strict=%s lang=%s src=%s acl=%s comment=%s',
                      p.oid::regprocedure, pg_get_function_result(p.oid), p.prosecdef, p.proconfig, p.provolatile,
                      p.proparallel, p.proisstrict, l.lanname, p.prosrc, p.proacl, obj_description(p.oid, 'pg_proc'))
        FROM deps JOIN pg_proc p ON deps.classid = 'pg_proc'::regclass AND p.oid = deps.objid
        JOIN pg_language l ON l.oid = p.prolang
        UNION ALL
        SELECT format('relation %s kind=%s acl=%s comment=%s', c.oid::regclass, c.relkind, c.relacl,
                      obj_description(c.oid, 'pg_class'))
        FROM deps JOIN pg_class c ON deps.classid = 'pg_class'::regclass AND c.oid = deps.objid
        UNION ALL
        SELECT format('column %s.%s %s notnull=%s default=%s', c.oid::regclass, a.attname,
                      format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid))
        FROM deps JOIN pg_class c ON deps.classid = 'pg_class'::regclass AND c.oid = deps.objid
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
        UNION ALL
        SELECT format('constraint %s %s', c.oid::regclass, pg_get_constraintdef(k.oid))
        FROM deps JOIN pg_class c ON deps.classid = 'pg_class'::regclass AND c.oid = deps.objid
        JOIN pg_constraint k ON k.conrelid = c.oid
        ORDER BY 1";
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

async fn require_0_1_0(client: &Client) {
    let available: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extension_versions WHERE name = 'otobot' AND version = '0.1.0')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        available,
        "otobot--0.1.0.sql is not installed: copy extension/sql/otobot--0.1.0.sql to `pg_config --sharedir`/extension (scripts/test.sh does)"
    );
}

#[tokio::test]
async fn upgrading_from_0_1_0_gives_what_a_fresh_0_2_0_install_gives() {
    let upgraded = TestDb::new().await;
    let fresh = TestDb::new().await;
    let (a, b) = (upgraded.client().await, fresh.client().await);
    require_0_1_0(&a).await;
    a.batch_execute(
        "CREATE SCHEMA otobot;
         CREATE EXTENSION otobot VERSION '0.1.0' SCHEMA otobot;
         INSERT INTO otobot.key_versions (version, check_value) VALUES (1, decode(repeat('ab', 32), 'hex'));
         ALTER EXTENSION otobot UPDATE TO '0.2.0';",
    )
    .await
    .unwrap();
    b.batch_execute("CREATE SCHEMA otobot; CREATE EXTENSION otobot SCHEMA otobot;")
        .await
        .unwrap();
    let (da, db) = (describe(&a).await, describe(&b).await);
    assert!(
        da.iter()
            .any(|l| l.starts_with("function otobot.otobot_register_key(integer,bytea)")),
        "{da:#?}"
    );
    assert_eq!(da, db);
    // A version recorded before 0.2.0 stays registered, marked as such.
    let by: String = a
        .query_one(
            "SELECT registered_by FROM otobot.key_versions WHERE version = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(by, "(first load, before 0.2.0)");
}

#[tokio::test]
async fn migrate_upgrades_a_database_created_at_0_1_0() {
    let db = TestDb::new().await;
    let client = db.client().await;
    require_0_1_0(&client).await;
    static MIGRATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = MIGRATING.lock().await;
    // As migration 0001 left a database before 0.2.0: the schema owned by
    // otobot_owner, the extension at 0.1.0 (0001's CREATE EXTENSION IF NOT EXISTS then skips).
    client
        .batch_execute(
            "DO $$ BEGIN
                 IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'otobot_owner') THEN
                     CREATE ROLE otobot_owner NOLOGIN;
                 END IF;
             END $$;
             CREATE SCHEMA otobot AUTHORIZATION otobot_owner;
             CREATE EXTENSION otobot VERSION '0.1.0' SCHEMA otobot;",
        )
        .await
        .unwrap();
    otobot_api::migrate::run(&mut db.client().await, &otobot_api::migrate::embedded())
        .await
        .expect("migrations apply over 0.1.0");
    let version: String = client
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'otobot'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, otobot_api::migrate::EXTENSION_VERSION);
    register_key(&client, 1, &random_hex32()).await;
}
