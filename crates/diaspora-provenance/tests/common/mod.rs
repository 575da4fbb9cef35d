//! Stores for the shared suite: every test runs against the embedded SQLite
//! store and against a real PostgreSQL server (a fresh database per test).
#![allow(dead_code)]

use diaspora_provenance::Provenance;

/// A store under test and what keeps it alive.
pub struct TestStore {
    /// The store.
    pub prov: Provenance,
    /// Its URL.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<PgDatabase>,
}

/// A fresh PostgreSQL database, dropped with this.
pub struct PgDatabase {
    /// Its URL (no query: parameters may be appended with `?`).
    pub url: String,
    /// The URL of `DIASPORA_TEST_PG`, which made it.
    pub admin: String,
    db: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // A store's connection may still be open; FORCE ends it.
        if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db));
        }
    }
}

/// A fresh SQLite store in a temporary directory.
pub fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("prov.sqlite").display().to_string();
    TestStore {
        prov: Provenance::open(&url).unwrap(),
        url,
        _dir: Some(dir),
        _pg: None,
    }
}

/// A fresh PostgreSQL store on the server named by `DIASPORA_TEST_PG`
/// (see [`postgres_database`]).
pub fn postgres() -> Option<TestStore> {
    let pg = postgres_database()?;
    Some(TestStore {
        prov: Provenance::open(&pg.url).unwrap(),
        url: pg.url.clone(),
        _dir: None,
        _pg: Some(pg),
    })
}

/// A fresh PostgreSQL database on the server named by `DIASPORA_TEST_PG`
/// (`./scripts/test` installs, starts and exports it). Without it the test
/// fails, unless `DIASPORA_SKIP_PG=1` says to skip (then `None`).
pub fn postgres_database() -> Option<PgDatabase> {
    let Ok(admin) = std::env::var("DIASPORA_TEST_PG") else {
        if std::env::var("DIASPORA_SKIP_PG").as_deref() == Ok("1") {
            eprintln!("DIASPORA_SKIP_PG=1: PostgreSQL half of this test skipped");
            return None;
        }
        panic!(
            "DIASPORA_TEST_PG is not set. Run ./scripts/test (it installs and starts PostgreSQL), \
             or set DIASPORA_TEST_PG=postgres://USER:PASS@HOST:PORT/DB, or DIASPORA_SKIP_PG=1 to skip"
        );
    };
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let db = format!(
        "prov_t{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let mut c = postgres::Client::connect(&admin, postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at DIASPORA_TEST_PG: {e}"));
    c.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
    drop(c);
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b)
        .expect("URL with a database");
    Some(PgDatabase {
        url: format!("{base}/{db}"),
        admin,
        db,
    })
}

/// Runs `body` against SQLite and PostgreSQL.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    let mut s = $crate::common::sqlite();
                    super::$name(&mut s.prov);
                }
                #[test]
                fn postgres() {
                    if let Some(mut s) = $crate::common::postgres() {
                        super::$name(&mut s.prov);
                    }
                }
            }
        )*
    };
}
