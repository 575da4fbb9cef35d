//! Node hosts (`[[nodes]]`): `diaspora serve`, each with its own data
//! directory, a data and an admin port on loopback, and the CA it writes
//! when it starts (which every client of it is given).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{HostAt, HostCommand, HostKind, NodeAddrs, Ready, Records};
use crate::cli_args::{Invocation, Serve};
use crate::{Scenario, TwinError};

/// The node kind.
pub struct Node;

/// Where a node started in `dir` keeps its CA certificate.
pub fn ca_path(dir: &Path) -> PathBuf {
    dir.join("data/certs/ca.pem")
}

/// Addresses for every node of `scenario`: free loopback ports, none
/// given twice.
pub fn allocate(scenario: &Scenario, work_dir: &Path) -> HashMap<String, NodeAddrs> {
    let mut taken = HashSet::new();
    let mut port = || loop {
        let p = free_port();
        if taken.insert(p) {
            return std::net::SocketAddr::from(([127, 0, 0, 1], p));
        }
    };
    scenario
        .nodes
        .iter()
        .map(|n| {
            let addrs = NodeAddrs {
                data: port(),
                admin: port(),
                ca: match &scenario.auth {
                    // One CA for every node, so a host's one certificate
                    // is good at each.
                    Some(_) => crate::auth::certs_dir(work_dir).join("ca.pem"),
                    None => ca_path(&work_dir.join(&n.name)),
                },
            };
            (n.name.clone(), addrs)
        })
        .collect()
}

/// A loopback port free for both UDP (the data plane is QUIC) and TCP (the
/// admin plane) now.
fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral UDP port");
        let port = udp.local_addr().expect("local address").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl HostKind for Node {
    fn command(&self, at: HostAt<'_>) -> Result<HostCommand, TwinError> {
        let (scenario, index, env) = (at.scenario, at.index, at.env);
        let n = &scenario.nodes[index];
        let addrs = env.node(&n.name);
        Ok(HostCommand {
            invocation: Invocation::Serve(Serve {
                data_dir: env.host_dir(&n.name).join("data"),
                listen: addrs.data,
                admin: addrs.admin,
                fsync: n.fsync.clone(),
                auth: scenario
                    .auth
                    .as_ref()
                    .map(|a| (a.mode.clone(), crate::auth::certs_dir(&env.work_dir))),
            }),
            stdout: None,
            files: Vec::new(),
            records: Records::None,
        })
    }

    fn ready(&self) -> Option<Ready> {
        Some(Ready {
            log_line: "diaspora node serving",
            within: Duration::from_secs(30),
        })
    }

    fn plan(&self, scenario: &Scenario) -> Vec<String> {
        scenario.nodes.iter().map(|n| n.name.clone()).collect()
    }
}
