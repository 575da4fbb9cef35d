//! A scenario's `[auth]`: the nodes enforce identities and ACLs, and every
//! host has its own identity.
//!
//! Before any host starts, the run makes one CA for all its nodes
//! (`diaspora certs --out`) and a client certificate for each host, named
//! after it (`diaspora certs client --name HOST`), plus one for the twin
//! itself ([`TWIN_USER`], the nodes' superuser: it creates the topics,
//! grants the ACL and publishes the link metrics). A host finds its
//! certificate in its environment (`DIASPORA_CERT`/`DIASPORA_CERT_KEY`, and
//! for a bridge the same on both sides), which every client command reads;
//! a pool hands it on to its workers. Once the nodes serve, the scenario's
//! grants are applied with `diaspora acl grant`; nothing else is allowed.
//!
//! After the run the nodes' audit logs say who was refused what
//! ([`refusals`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::hosts::{self, HostEnv, Phase};
use crate::{Scenario, TwinError};

/// The twin's own user on every node (a superuser).
pub const TWIN_USER: &str = "twin";

/// Where the run keeps its CA (shared by every node).
pub fn certs_dir(work_dir: &Path) -> PathBuf {
    work_dir.join("auth/ca")
}

fn identities_dir(work_dir: &Path) -> PathBuf {
    work_dir.join("auth/identities")
}

/// The run's identities: a certificate per host and one for the twin.
#[derive(Debug, Clone)]
pub struct Identities {
    dir: PathBuf,
}

impl Identities {
    /// Makes the CA and a certificate for the twin and for every host of
    /// `scenario` but the nodes.
    pub fn issue(
        binary: &Path,
        scenario: &Scenario,
        work_dir: &Path,
    ) -> Result<Identities, TwinError> {
        let ca = certs_dir(work_dir);
        run(
            binary,
            &[],
            &["certs".into(), "--out".into(), ca.display().to_string()],
            "certs",
        )?;
        let dir = identities_dir(work_dir);
        let mut names = vec![TWIN_USER.to_string()];
        for phase in Phase::ALL {
            names.extend(
                hosts::planned(scenario, phase)
                    .into_iter()
                    .filter(|h| h.kind.name != "node")
                    .map(|h| h.name),
            );
        }
        for name in names {
            run(
                binary,
                &[],
                &[
                    "certs".into(),
                    "client".into(),
                    "--name".into(),
                    name,
                    "--ca-dir".into(),
                    ca.display().to_string(),
                    "--out".into(),
                    dir.display().to_string(),
                ],
                "certs client",
            )?;
        }
        Ok(Identities { dir })
    }

    /// The environment that makes a client command present `name`'s
    /// certificate (on both sides, for a bridge).
    pub fn env_for(&self, name: &str) -> Vec<(String, String)> {
        let cert = self.dir.join(format!("{name}.pem")).display().to_string();
        let key = self.dir.join(format!("{name}.key")).display().to_string();
        ["", "FROM_", "TO_"]
            .iter()
            .flat_map(|side| {
                [
                    (format!("DIASPORA_{side}CERT"), cert.clone()),
                    (format!("DIASPORA_{side}CERT_KEY"), key.clone()),
                ]
            })
            .collect()
    }

    /// The twin's own environment (its superuser certificate).
    pub fn twin_env(&self) -> Vec<(String, String)> {
        self.env_for(TWIN_USER)
    }

    /// Grants the scenario's ACL entries on their nodes.
    pub fn grant(
        &self,
        binary: &Path,
        scenario: &Scenario,
        env: &HostEnv,
    ) -> Result<(), TwinError> {
        let Some(auth) = &scenario.auth else {
            return Ok(());
        };
        for g in &auth.grants {
            let nodes: Vec<&str> = if g.nodes.is_empty() {
                scenario.nodes.iter().map(|n| n.name.as_str()).collect()
            } else {
                g.nodes.iter().map(String::as_str).collect()
            };
            for node in nodes {
                let addrs = env.node(node);
                let mut args = vec!["acl".to_string(), "grant".into()];
                args.extend(g.acl.iter().cloned());
                args.extend([
                    "--admin".into(),
                    addrs.admin.to_string(),
                    "--ca".into(),
                    addrs.ca.display().to_string(),
                ]);
                run(binary, &self.twin_env(), &args, "acl grant")?;
            }
        }
        Ok(())
    }
}

fn run(
    binary: &Path,
    env: &[(String, String)],
    args: &[String],
    what: &'static str,
) -> Result<(), TwinError> {
    let out = Command::new(binary)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .map_err(|source| TwinError::Command { what, source })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TwinError::Auth {
            what: format!("diaspora {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Who each node refused, by principal (`User:NAME`), counted from its
/// audit log (`DATA_DIR/auth/audit.log`): every line that is not a change.
/// Lines that do not parse are skipped (the log is the node's to write).
pub fn refusals(scenario: &Scenario, work_dir: &Path) -> BTreeMap<String, u64> {
    let mut by = BTreeMap::new();
    for n in &scenario.nodes {
        let log = work_dir.join(&n.name).join("data/auth/audit.log");
        let Ok(text) = std::fs::read_to_string(&log) else {
            continue;
        };
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["outcome"] != "changed" {
                let who = v["principal"].as_str().unwrap_or("?").to_string();
                *by.entry(who).or_insert(0) += 1;
            }
        }
    }
    by
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_count_every_outcome_but_changes_by_principal() {
        let dir = tempfile::tempdir().unwrap();
        let scenario = Scenario::parse(
            "name = \"a\"\nduration_s = 1\n[[nodes]]\nname = \"n\"\n[auth]\nmode = \"cert\"\n",
        )
        .unwrap();
        let log = dir.path().join("n/data/auth/audit.log");
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        std::fs::write(
            &log,
            concat!(
                "{\"principal\":\"User:twin\",\"outcome\":\"changed\"}\n",
                "{\"principal\":\"User:x\",\"outcome\":\"denied\"}\n",
                "not json\n",
                "{\"principal\":\"User:x\",\"outcome\":\"denied\"}\n",
                "{\"principal\":\"anonymous\",\"outcome\":\"unauthenticated\"}\n",
            ),
        )
        .unwrap();
        let r = refusals(&scenario, dir.path());
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r["User:x"], 2);
        assert_eq!(r["anonymous"], 1);
    }

    #[test]
    fn a_host_gets_its_own_certificate_on_every_side() {
        let ids = Identities {
            dir: PathBuf::from("/w/auth/identities"),
        };
        let env: BTreeMap<String, String> = ids.env_for("det-a").into_iter().collect();
        assert_eq!(env["DIASPORA_CERT"], "/w/auth/identities/det-a.pem");
        assert_eq!(
            env["DIASPORA_FROM_CERT_KEY"],
            "/w/auth/identities/det-a.key"
        );
        assert_eq!(env["DIASPORA_TO_CERT"], "/w/auth/identities/det-a.pem");
        assert_eq!(env.len(), 6);
    }
}
