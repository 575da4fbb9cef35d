//! Identities and ACLs through the CLI against a real `diaspora serve`
//! process (issue 19): an administrator with a client certificate sets up
//! a user, its group, ACL entries and a token; the user works with the
//! token and is refused what the ACL does not allow.

mod common;

use std::process::{Command, Output};

use common::{free_port, serve_with, Served, BIN};

struct As<'a> {
    node: &'a Served,
    cert: Option<(String, String)>,
    token: Option<String>,
}

impl As<'_> {
    fn run(&self, args: &[&str]) -> Output {
        let mut c = Command::new(BIN);
        c.args(args).args(["--ca", self.node.ca.to_str().unwrap()]);
        if ["topic", "user", "token", "acl", "whoami", "tenant"].contains(&args[0])
            || args[..2] == ["trigger", "create"]
        {
            c.args(["--admin", &self.node.admin.to_string()]);
        } else {
            c.args(["--addr", &self.node.data.to_string()]);
        }
        if let Some((cert, key)) = &self.cert {
            c.args(["--cert", cert, "--cert-key", key]);
        }
        c.env_remove("DIASPORA_TOKEN");
        if let Some(t) = &self.token {
            c.env("DIASPORA_TOKEN", t);
        }
        c.output().expect("run diaspora")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "diaspora {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "diaspora {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// A node that requires identities (`--auth cert-or-token`, superuser
/// `admin`) in `dir`, and the superuser's client certificate and key.
fn secured_node(dir: &std::path::Path) -> (Served, (String, String)) {
    let data = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let node = serve_with(
        dir,
        data,
        admin,
        "interval",
        &["--auth", "cert-or-token", "--superuser", "admin"],
    );
    let clients = dir.join("clients");
    let out = Command::new(BIN)
        .args(["certs", "client", "--name", "admin", "--ca-dir"])
        .arg(dir.join("certs"))
        .arg("--out")
        .arg(&clients)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert = (
        clients.join("admin.pem").display().to_string(),
        clients.join("admin.key").display().to_string(),
    );
    (node, cert)
}

#[test]
fn an_admin_grants_a_user_a_token_and_acl_and_the_node_enforces_them() {
    let dir = tempfile::tempdir().unwrap();
    let (node, admin_cert) = secured_node(dir.path());
    let root = As {
        node: &node,
        cert: Some(admin_cert),
        token: None,
    };
    let anonymous = As {
        node: &node,
        cert: None,
        token: None,
    };

    assert!(root
        .ok(&["whoami"])
        .contains("User:admin (authenticated by certificate; node auth mode cert-or-token)"));
    root.ok(&["topic", "create", "frames", "--partitions", "2"]);
    root.ok(&["topic", "create", "secrets"]);
    root.ok(&["user", "add", "alice", "--group", "beamline"]);
    assert!(root.ok(&["user", "list"]).contains("alice\tbeamline"));
    root.ok(&[
        "acl",
        "grant",
        "allow Group:beamline write topic:frames",
        "allow User:alice read topic:frames",
    ]);
    let e = root.fails(&["acl", "grant", "allow User:alice fly topic:frames"]);
    assert!(e.contains("unknown operation") || e.contains("fly"), "{e}");
    assert!(root
        .ok(&["acl", "list"])
        .contains("allow Group:beamline write topic:frames"));
    let token = root
        .ok(&["token", "create", "--user", "alice", "--ttl", "1h"])
        .trim()
        .to_string();
    assert!(token.starts_with("dsp_"), "{token}");
    let listed = root.ok(&["token", "list", "--user", "alice"]);
    assert!(
        listed.contains("alice") && !listed.contains(&token[21..]),
        "{listed}"
    );

    let alice = As {
        node: &node,
        cert: None,
        token: Some(token.clone()),
    };
    assert!(alice.ok(&["whoami"]).contains("User:alice"));
    alice.ok(&[
        "produce",
        "--topic",
        "frames",
        "--synthetic",
        "50",
        "--size",
        "256",
    ]);
    let consumed = alice.ok(&["consume", "--topic", "frames", "--count", "50", "--json"]);
    assert_eq!(consumed.lines().count(), 50, "{consumed}");
    // What the ACL does not allow is refused, naming user, operation and resource.
    let e = alice.fails(&["produce", "--topic", "secrets", "--synthetic", "1"]);
    assert!(
        e.contains("permission denied") && e.contains("User:alice") && e.contains("topic:secrets"),
        "{e}"
    );
    let e = alice.fails(&["topic", "delete", "frames"]);
    assert!(
        e.contains("permission denied") && e.contains("delete"),
        "{e}"
    );
    // Listing shows only what alice may describe.
    assert_eq!(alice.ok(&["topic", "list"]).trim(), "frames");
    // No credentials at all.
    let e = anonymous.fails(&["consume", "--topic", "frames", "--count", "1"]);
    assert!(e.contains("unauthenticated"), "{e}");

    // Tenants through the CLI.
    root.ok(&[
        "tenant",
        "create",
        "lab",
        "--prefix",
        "lab.",
        "--stored-bytes",
        "1000000",
    ]);
    root.ok(&["user", "add", "dora", "--tenant", "lab"]);
    assert!(root
        .ok(&["tenant", "list"])
        .contains("lab\tlab.\t0\t0\t1000000\t0"));
    assert!(root.ok(&["user", "list"]).contains("dora\tlab\tlab"));
    let e = root.fails(&["user", "add", "eve", "--tenant", "nope"]);
    assert!(e.contains("no tenant nope"), "{e}");

    // Revoked: refused from then on.
    let id = &token[4..20];
    root.ok(&["token", "revoke", id]);
    let e = alice.fails(&["consume", "--topic", "frames", "--count", "1"]);
    assert!(e.contains("revoked"), "{e}");
    let audit = std::fs::read_to_string(dir.path().join("auth/audit.log")).unwrap();
    assert!(
        audit.contains("topic:secrets") && audit.contains("revoke token"),
        "{audit}"
    );
}

/// Octopus-style onboarding under ACLs (issue 20): a user creates and runs
/// their own trigger with what the administrator granted them; another
/// user without those grants is refused, naming the operation.
#[test]
fn a_user_onboards_and_runs_a_trigger_within_their_grants_and_another_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (node, admin_cert) = secured_node(dir.path());
    let root = As {
        node: &node,
        cert: Some(admin_cert),
        token: None,
    };
    root.ok(&["topic", "create", "frames"]);
    root.ok(&["topic", "create", "diaspora.triggers"]);
    root.ok(&[
        "produce",
        "--topic",
        "frames",
        "--synthetic",
        "20",
        "--size",
        "64",
    ]);
    let mut tokens = Vec::new();
    for user in ["bob", "eve"] {
        root.ok(&["user", "add", user]);
        tokens.push(
            root.ok(&["token", "create", "--user", user, "--ttl", "1h"])
                .trim()
                .to_string(),
        );
    }
    root.ok(&[
        "acl",
        "grant",
        "allow User:* read topic:frames",
        "allow User:* describe topic:frames",
        "allow User:* all topic:diaspora.triggers",
        "allow User:bob all topic:triggers.mine.dlq",
        "allow User:bob all group:trigger.mine",
    ]);
    let [bob, eve] = [0, 1].map(|i| As {
        node: &node,
        cert: None,
        token: Some(tokens[i].clone()),
    });
    let spec = dir.path().join("mine.toml");
    std::fs::write(
        &spec,
        "name = \"mine\"\nfilter = '@payload_len >= 64'\n[source]\ntopic = \"frames\"\n[action]\nkind = \"command\"\nargv = [\"true\"]\n",
    )
    .unwrap();
    let spec = spec.to_str().unwrap();
    let e = eve.fails(&["trigger", "create", "--spec", spec]);
    assert!(
        e.contains("permission denied")
            && e.contains("User:eve")
            && e.contains("triggers.mine.dlq"),
        "{e}"
    );
    assert!(bob
        .ok(&["trigger", "create", "--spec", spec])
        .contains("created topic triggers.mine.dlq"));
    let runs = bob.ok(&["trigger", "run", "--spec", spec, "--idle-s", "2"]);
    assert_eq!(runs.lines().count(), 20, "{runs}");
    let e = eve.fails(&["trigger", "run", "--spec", spec, "--idle-s", "2"]);
    assert!(
        e.contains("permission denied") && e.contains("User:eve"),
        "{e}"
    );
    assert!(bob.ok(&["trigger", "list"]).contains("20 ok"));
}

#[test]
fn serve_says_when_it_is_open_and_will_not_open_a_public_address_by_accident() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args([
            "--listen",
            &format!("0.0.0.0:{}", free_port()),
            "--admin",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("is not a loopback address") && e.contains("--auth"),
        "{e}"
    );
    let e = Command::new(BIN)
        .args(["serve", "--auth", "open"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&e.stderr).contains("unknown auth mode 'open'"));
}

/// Runs `diaspora bench ARGS… --json` and returns its report.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN)
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn bench_fabric_runs_with_auth_off_and_on_in_the_same_run() {
    let r = bench_json(&[
        "fabric",
        "--auth-compare",
        "1",
        "--items",
        "3000",
        "--size",
        "256",
    ]);
    for k in ["off_mb_per_s", "on_mb_per_s"] {
        let runs = r[k].as_array().unwrap();
        assert_eq!(runs.len(), 1, "{r}");
        assert!(runs[0].as_f64().unwrap() > 0.0, "{r}");
    }
    assert!(r["overhead_pct"].is_number(), "{r}");
}

#[test]
fn bench_tenants_holds_the_noisy_tenant_to_its_quota() {
    let r = bench_json(&[
        "tenants",
        "--rounds",
        "1",
        "--bytes",
        "5000000",
        "--quota-bytes-per-s",
        "2000000",
    ]);
    // 5 MB with a 2 MB burst and 2 MB/s after it take ≥ 1.5 s: ≤ 1.67× the quota.
    let over = r["noisy_over_quota"].as_f64().unwrap();
    assert!(over > 0.0 && over <= 1.8, "{r}");
    assert!(r["quiet_alone_mb_per_s"][0].as_f64().unwrap() > 0.0, "{r}");
    assert!(
        r["quiet_with_noisy_mb_per_s"][0].as_f64().unwrap() > 0.0,
        "{r}"
    );
}
