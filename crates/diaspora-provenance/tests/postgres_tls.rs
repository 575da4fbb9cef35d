//! TLS to the PostgreSQL store, against the server of `DIASPORA_TEST_PG`
//! (`./scripts/test` turns TLS on there and exports `DIASPORA_TEST_PG_CA`,
//! the PEM file that verifies the server's certificate). Whether a
//! connection is encrypted is asked of the server (`pg_stat_ssl`), not
//! taken from the client's word.

mod common;

use diaspora_provenance::postgres::PgBackend;
use diaspora_provenance::{Kind, Provenance, Record};
use std::path::PathBuf;

/// `url` with `params` appended to its query.
fn with(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

/// The PEM file the server's certificate verifies against:
/// `DIASPORA_TEST_PG_CA`, else the server's own `ssl_cert_file` when this
/// machine can read it (a self-signed certificate is its own root).
fn server_ca(admin: &str) -> PathBuf {
    if let Ok(ca) = std::env::var("DIASPORA_TEST_PG_CA") {
        return PathBuf::from(ca);
    }
    let mut c = postgres::Client::connect(admin, postgres::NoTls).unwrap();
    let file: String = c.query_one("SHOW ssl_cert_file", &[]).unwrap().get(0);
    let data_dir: String = c.query_one("SHOW data_directory", &[]).unwrap().get(0);
    let path = PathBuf::from(data_dir).join(file);
    assert!(
        std::fs::metadata(&path).is_ok(),
        "DIASPORA_TEST_PG_CA is not set and the server's certificate {} is not readable here: \
         run ./scripts/test, or set DIASPORA_TEST_PG_CA to a PEM file that verifies it",
        path.display()
    );
    path
}

/// A CA that signed nothing the server holds.
fn unrelated_ca(dir: &std::path::Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "unrelated test CA");
    let path = dir.join("unrelated-ca.pem");
    std::fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
    path
}

/// The database's URL with its host replaced by a name no certificate
/// holds, connecting to the same address through `hostaddr`: the name is
/// then only what the certificate is checked against.
fn with_wrong_host_name(url: &str) -> String {
    use std::net::ToSocketAddrs;
    let config: postgres::Config = url.parse().unwrap();
    let postgres::config::Host::Tcp(host) = &config.get_hosts()[0] else {
        panic!("DIASPORA_TEST_PG must name a TCP host for the TLS tests");
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let ip = (host.as_str(), port)
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap()
        .ip();
    let (_, after_at) = url.split_once('@').expect("a URL with user info");
    let (_, path) = after_at.split_once('/').expect("a URL with a database");
    let (user_info, _) = url.split_once('@').unwrap();
    with(
        &format!("{user_info}@wrong-name.invalid:{port}/{path}"),
        &format!("hostaddr={ip}"),
    )
}

#[test]
fn require_encrypts_and_the_store_works() {
    let Some(db) = common::postgres_database() else {
        return;
    };
    let mut pg = PgBackend::connect(&with(&db.url, "sslmode=require")).unwrap();
    assert!(
        pg.connection_encrypted().unwrap(),
        "sslmode=require, but the server reports the connection unencrypted"
    );
    let mut prov = Provenance::new(Box::new(pg));
    let id = prov
        .add(Record::new(Kind::Data, "over-tls").uri("file:///scan/17.h5"))
        .unwrap();
    let back = prov.get(id).unwrap();
    assert_eq!(back.name, "over-tls");
    assert_eq!(back.uris, vec!["file:///scan/17.h5".to_string()]);
}

#[test]
fn prefer_is_the_default_and_encrypts() {
    let Some(db) = common::postgres_database() else {
        return;
    };
    let mut pg = PgBackend::connect(&db.url).unwrap();
    assert!(pg.connection_encrypted().unwrap());
}

#[test]
fn disable_is_plain() {
    let Some(db) = common::postgres_database() else {
        return;
    };
    let mut pg = PgBackend::connect(&with(&db.url, "sslmode=disable")).unwrap();
    assert!(!pg.connection_encrypted().unwrap());
}

#[test]
fn verify_ca_checks_the_chain_against_sslrootcert() {
    let Some(db) = common::postgres_database() else {
        return;
    };
    let ca = server_ca(&db.admin);
    let good = with(
        &db.url,
        &format!("sslmode=verify-ca&sslrootcert={}", ca.display()),
    );
    let mut pg = PgBackend::connect(&good).unwrap();
    assert!(pg.connection_encrypted().unwrap());
    drop(pg);

    // verify-ca does not check the name; verify-full does.
    let renamed = with_wrong_host_name(&db.url);
    let root = format!("sslrootcert={}", ca.display());
    let mut pg = PgBackend::connect(&with(&renamed, &format!("sslmode=verify-ca&{root}")))
        .unwrap_or_else(|e| panic!("verify-ca with a host name the certificate lacks: {e}"));
    assert!(pg.connection_encrypted().unwrap());
    drop(pg);
    let err = PgBackend::connect(&with(&renamed, &format!("sslmode=verify-full&{root}")))
        .err()
        .expect("verify-full accepted a certificate for another name")
        .to_string();
    assert!(
        err.contains("certificate") && err.contains("wrong-name.invalid"),
        "{err}"
    );

    // A CA that did not sign the server's certificate is refused, for
    // verify-ca and for require with a root file (libpq's rule).
    let dir = tempfile::tempdir().unwrap();
    let other = unrelated_ca(dir.path());
    for mode in ["verify-ca", "verify-full", "require"] {
        let url = with(
            &db.url,
            &format!("sslmode={mode}&sslrootcert={}", other.display()),
        );
        let err = PgBackend::connect(&url)
            .err()
            .unwrap_or_else(|| panic!("sslmode={mode} accepted a certificate no root signed"))
            .to_string();
        assert!(
            err.contains("certificate") && err.contains("unrelated-ca.pem"),
            "{mode}: {err}"
        );
        assert!(!err.contains(":diaspora@"), "the password leaked: {err}");
    }
}

#[test]
fn bad_tls_parameters_are_clear_errors() {
    let Some(db) = common::postgres_database() else {
        return;
    };
    let err = PgBackend::connect(&with(&db.url, "sslmode=sometimes"))
        .err()
        .expect("a bad sslmode was accepted")
        .to_string();
    assert!(
        err.contains("\"sometimes\"")
            && err.contains("disable, prefer, require, verify-ca, verify-full"),
        "{err}"
    );
    let err = PgBackend::connect(&with(&db.url, "sslmode=verify-full"))
        .err()
        .expect("verify-full without sslrootcert was accepted")
        .to_string();
    assert!(err.contains("needs sslrootcert"), "{err}");
    let err = PgBackend::connect(&with(
        &db.url,
        "sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
    ))
    .err()
    .expect("a missing sslrootcert was accepted")
    .to_string();
    assert!(
        err.contains("/nonexistent/ca.pem") && err.contains("cannot read"),
        "{err}"
    );
    // The error names the store without its password.
    let password = db
        .url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(creds, _)| creds.split_once(':'))
        .map(|(_, p)| p.to_string());
    if let Some(p) = password {
        assert!(
            !err.contains(&format!(":{p}@")),
            "the password leaked: {err}"
        );
    }
}
