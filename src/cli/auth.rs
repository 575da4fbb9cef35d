//! `diaspora user|token|acl|whoami`: identities and ACLs through the admin
//! plane. Each change needs `alter cluster` (or a superuser, `serve
//! --superuser NAME`); lists need `describe cluster`.

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use super::{admin, AdminConn};

/// `diaspora user …`.
#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user, or replace the groups of one.
    Add {
        /// User name (the CN of its client certificate, or a token's owner).
        name: String,
        /// A group the user is in (repeatable); ACL entries can name `Group:G`.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// The tenant the user belongs to (`diaspora tenant create`): it
        /// sees and touches only the tenant's topics, under its quotas.
        #[arg(long)]
        tenant: Option<String>,
        /// The node.
        #[command(flatten)]
        conn: AdminConn,
    },
    /// Remove a user and every token of it.
    Remove {
        /// User name.
        name: String,
        /// The node.
        #[command(flatten)]
        conn: AdminConn,
    },
    /// List users and their groups.
    List {
        /// The node.
        #[command(flatten)]
        conn: AdminConn,
    },
}

/// `diaspora token …`.
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a bearer token for a user; it is printed once (the node keeps
    /// only its digest). Pass it to clients as DIASPORA_TOKEN.
    Create {
        /// The user it authenticates.
        #[arg(long)]
        user: String,
        /// What it is for.
        #[arg(long, default_value = "")]
        description: String,
        /// Lifetime, e.g. 3600s, 90m, 12h, 30d (default: until revoked).
        #[arg(long)]
        ttl: Option<humantime::Duration>,
        /// The node.
        #[command(flatten)]
        conn: AdminConn,
    },
    /// List tokens (ids, users, expiry, revocation; never secrets).
    List {
        /// Only this user's.
        #[arg(long, default_value = "")]
        user: String,
        /// The node.
        #[command(flatten)]
        conn: AdminConn,
    },
    /// Revoke a token by id: refused from the next request on, also on
    /// connections opened before.
    Revoke {
        /// Token id (the 16 hex digits after `dsp_`).
        id: String,
        /// The node.
        #[command(flatten)]
        conn: AdminConn,
    },
}

/// `diaspora tenant …`.
#[derive(Subcommand)]
pub enum TenantCommand {
    /// Create a tenant owning every topic and group whose name starts with
    /// PREFIX (or change its quotas). Its users (`user add --tenant`) see
    /// and touch only those; the tenant's group is granted `all` on them.
    Create {
        /// Tenant name.
        name: String,
        /// Topic and group name prefix it owns (must not overlap another's).
        #[arg(long)]
        prefix: String,
        /// Most bytes/s its users may produce; beyond it answers are held
        /// back (0: no limit).
        #[arg(long, default_value_t = 0)]
        produce_bytes_per_s: u64,
        /// Most bytes/s its users may fetch, likewise (0: no limit).
        #[arg(long, default_value_t = 0)]
        fetch_bytes_per_s: u64,
        /// Most bytes its topics may hold; a produce beyond it is refused
        /// (0: no limit).
        #[arg(long, default_value_t = 0)]
        stored_bytes: u64,
        /// The node.
        #[command(flatten)]
        conn: AdminConn,
    },
    /// List tenants, their quotas and the bytes they store.
    List {
        /// The node.
        #[command(flatten)]
        conn: AdminConn,
    },
}

/// Runs `diaspora tenant …`.
pub async fn tenant(c: TenantCommand) -> Result<()> {
    match c {
        TenantCommand::Create {
            name,
            prefix,
            produce_bytes_per_s,
            fetch_bytes_per_s,
            stored_bytes,
            conn,
        } => {
            let created = admin(&conn)
                .await?
                .put_tenant(diaspora_proto::v1::TenantInfo {
                    name: name.clone(),
                    prefix: prefix.clone(),
                    produce_bytes_per_s,
                    fetch_bytes_per_s,
                    stored_bytes,
                    stored_bytes_used: 0,
                })
                .await?;
            println!(
                "{} tenant {name} owning '{prefix}*'",
                if created { "created" } else { "updated" }
            );
        }
        TenantCommand::List { conn } => {
            println!("name\tprefix\tproduce B/s\tfetch B/s\tstored quota\tstored");
            for t in admin(&conn).await?.list_tenants().await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    t.name,
                    t.prefix,
                    t.produce_bytes_per_s,
                    t.fetch_bytes_per_s,
                    t.stored_bytes,
                    t.stored_bytes_used
                );
            }
        }
    }
    Ok(())
}

/// `diaspora acl …`.
#[derive(Subcommand)]
pub enum AclCommand {
    /// Add entries: `allow|deny SUBJECT OPERATION RESOURCE`, e.g.
    /// `allow User:alice write topic:beam-*` or `deny Group:guests read topic:*`.
    Grant {
        /// One entry per argument (quote each), or none with --file.
        entries: Vec<String>,
        /// An ACL file: one entry per line, `#` comments.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// The node.
        #[command(flatten)]
        conn: AdminConn,
    },
    /// Remove entries (written exactly as granted).
    Revoke {
        /// One entry per argument (quote each), or none with --file.
        entries: Vec<String>,
        /// An ACL file: one entry per line, `#` comments.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// The node.
        #[command(flatten)]
        conn: AdminConn,
    },
    /// Print the ACL, one entry per line (an ACL file).
    List {
        /// The node.
        #[command(flatten)]
        conn: AdminConn,
    },
}

fn entries(args: Vec<String>, file: Option<std::path::PathBuf>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for a in args {
        // Checked here too, so a typo is reported before anything is sent.
        let e: diaspora_fabric::auth::AclEntry =
            a.parse().with_context(|| format!("ACL entry `{a}`"))?;
        out.push(e.to_string());
    }
    if let Some(f) = file {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        let parsed = diaspora_fabric::auth::parse_acl_file(&text)
            .with_context(|| format!("in {}", f.display()))?;
        out.extend(parsed.iter().map(|e| e.to_string()));
    }
    if out.is_empty() {
        bail!("give ACL entries as arguments or --file FILE");
    }
    Ok(out)
}

fn when(us: i64) -> String {
    if us == 0 {
        return "-".into();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Runs `diaspora user …`.
pub async fn user(c: UserCommand) -> Result<()> {
    match c {
        UserCommand::Add {
            name,
            groups,
            tenant,
            conn,
        } => {
            let created = admin(&conn)
                .await?
                .put_user(&name, &groups, tenant.as_deref())
                .await?;
            println!(
                "{} user {name}{}{}",
                if created { "added" } else { "updated" },
                if groups.is_empty() {
                    String::new()
                } else {
                    format!(" in group(s) {}", groups.join(", "))
                },
                tenant
                    .map(|t| format!(" of tenant {t}"))
                    .unwrap_or_default()
            );
        }
        UserCommand::Remove { name, conn } => {
            if admin(&conn).await?.remove_user(&name).await? {
                println!("removed user {name} and its tokens");
            } else {
                bail!("no user {name}");
            }
        }
        UserCommand::List { conn } => {
            for u in admin(&conn).await?.list_users().await? {
                println!("{}\t{}\t{}", u.name, u.groups.join(","), u.tenant);
            }
        }
    }
    Ok(())
}

/// Runs `diaspora token …`.
pub async fn token(c: TokenCommand) -> Result<()> {
    match c {
        TokenCommand::Create {
            user,
            description,
            ttl,
            conn,
        } => {
            let ttl_s = ttl.map_or(0, |d| d.as_secs().max(1));
            let r = admin(&conn)
                .await?
                .create_token(&user, &description, ttl_s)
                .await?;
            let info = r.info.unwrap_or_default();
            eprintln!(
                "token {} for User:{} (expires {}); shown once — keep it secret:",
                info.id,
                info.user,
                when(info.expires_us)
            );
            println!("{}", r.token);
        }
        TokenCommand::List { user, conn } => {
            println!("id\tuser\tcreated\texpires\trevoked\tdescription");
            for t in admin(&conn).await?.list_tokens(&user).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    t.id,
                    t.user,
                    when(t.created_us),
                    when(t.expires_us),
                    when(t.revoked_us),
                    t.description
                );
            }
        }
        TokenCommand::Revoke { id, conn } => {
            if admin(&conn).await?.revoke_token(&id).await? {
                println!("revoked token {id}");
            } else {
                bail!("no token {id} that is not revoked already");
            }
        }
    }
    Ok(())
}

/// Runs `diaspora acl …`.
pub async fn acl(c: AclCommand) -> Result<()> {
    match c {
        AclCommand::Grant {
            entries: e,
            file,
            conn,
        } => {
            let e = entries(e, file)?;
            let n = admin(&conn).await?.grant_acl(&e).await?;
            println!("granted {n} new entr{} of {}", plural(n), e.len());
        }
        AclCommand::Revoke {
            entries: e,
            file,
            conn,
        } => {
            let e = entries(e, file)?;
            let n = admin(&conn).await?.revoke_acl(&e).await?;
            println!("revoked {n} entr{} of {}", plural(n), e.len());
        }
        AclCommand::List { conn } => {
            for e in admin(&conn).await?.list_acl().await? {
                println!("{e}");
            }
        }
    }
    Ok(())
}

fn plural(n: u32) -> &'static str {
    if n == 1 {
        "y"
    } else {
        "ies"
    }
}

/// Runs `diaspora whoami`.
pub async fn whoami(conn: AdminConn) -> Result<()> {
    let w = admin(&conn).await?.who_am_i().await?;
    println!(
        "{} (authenticated by {}; node auth mode {}){}",
        w.principal,
        w.method,
        w.mode,
        if w.groups.is_empty() {
            String::new()
        } else {
            format!(" groups: {}", w.groups.join(", "))
        }
    );
    Ok(())
}
