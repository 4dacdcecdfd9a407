//! The catalog: concurrent start-up migrations and the append-only audit log.

use crate::harness::{PASSWORD, Vigil, fresh_db};

#[test]
fn two_daemons_starting_together_migrate_once() {
    let db = fresh_db();
    let a = Vigil::start(&db, "");
    let b = Vigil::start(&db, "");
    a.wait_ready();
    b.wait_ready();
    let versions = db
        .psql("SELECT string_agg(version::text, ',' ORDER BY version) FROM vigil.schema_history")
        .unwrap();
    assert_eq!(versions, "1,2,3,4,5");
    let applied: Vec<bool> = [&a, &b]
        .iter()
        .map(|v| {
            v.log_text().lines().any(|l| {
                l.contains("catalog schema is current") && l.contains("V1__initial_schema")
            })
        })
        .collect();
    assert_eq!(
        applied.iter().filter(|x| **x).count(),
        1,
        "exactly one daemon applies V1: {applied:?}"
    );
}

#[tokio::test]
async fn audit_log_rejects_update_and_delete() {
    let db = fresh_db();
    db.migrate().await;
    db.psql("INSERT INTO vigil.audit_log (seq, actor, action, hash) VALUES (1, 'test', 'backup.started', 'h1')")
        .unwrap();
    for sql in [
        "UPDATE vigil.audit_log SET actor = 'mallory'",
        "DELETE FROM vigil.audit_log",
        "TRUNCATE vigil.audit_log",
    ] {
        let err = db.psql(sql).unwrap_err();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(
        db.psql("SELECT actor FROM vigil.audit_log").unwrap(),
        "test"
    );
    let created = db
        .psql("SELECT created_at IS NOT NULL FROM vigil.audit_log")
        .unwrap();
    assert_eq!(created, "t", "created_at has a server default");
}

#[tokio::test]
async fn the_application_role_may_only_insert_and_select_audit_rows() {
    let db = fresh_db();
    // A plain (not superuser) role owning the catalog, as in production.
    let role = format!("app_{}", db.name);
    db.psql(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'; ALTER DATABASE {} OWNER TO {role}",
        db.name
    ))
    .unwrap();
    let config = vigil::config::CatalogConfig {
        url: vigil::config::Secret::new(format!(
            "postgres://{role}@127.0.0.1:{}/{}",
            db.port, db.name
        )),
        password: Some(vigil::config::Secret::new(PASSWORD)),
        password_file: None,
        pool_size: 2,
        connect_timeout: std::time::Duration::from_secs(10),
        query_timeout: std::time::Duration::from_secs(5),
    };
    let pool = vigil::catalog::pool(&config).unwrap();
    vigil::catalog::migrate(&pool).await.unwrap();
    let client = pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO vigil.audit_log (seq, actor, action, hash) VALUES (1, 'test', 'x', 'h')",
            &[],
        )
        .await
        .expect("the application role may insert");
    client
        .query_one("SELECT count(*) FROM vigil.audit_log", &[])
        .await
        .expect("and select");
    for sql in [
        "UPDATE vigil.audit_log SET actor = 'mallory'",
        "DELETE FROM vigil.audit_log",
        "TRUNCATE vigil.audit_log",
    ] {
        let err = client.execute(sql, &[]).await.unwrap_err();
        let text = format!("{err:?}");
        assert!(text.contains("permission denied"), "{sql}: {text}");
    }
}
