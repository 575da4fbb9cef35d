//! `diaspora topic …`: topics through the admin plane.

use anyhow::Result;
use clap::Subcommand;
use diaspora_proto::v1;

use super::{admin, AdminConn};

/// The subcommands of `diaspora topic`.
#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name ([A-Za-z0-9._-], 1-200 characters).
        name: String,
        /// Number of partitions.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Retention by size per partition, bytes (0 = node default).
        #[arg(long, default_value_t = 0)]
        retention_bytes: u64,
        /// Retention by age, milliseconds (0 = node default).
        #[arg(long, default_value_t = 0)]
        retention_ms: u64,
        /// The node.
        #[command(flatten)]
        conn: AdminConn,
    },
    /// List topics.
    List {
        /// The node.
        #[command(flatten)]
        conn: AdminConn,
    },
    /// Show a topic's partitions and offsets.
    Describe {
        /// Topic name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The node.
        #[command(flatten)]
        conn: AdminConn,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
        /// The node.
        #[command(flatten)]
        conn: AdminConn,
    },
}

/// Runs a `diaspora topic` command.
pub async fn run(t: TopicCommand) -> Result<()> {
    match t {
        TopicCommand::Create {
            name,
            partitions,
            retention_bytes,
            retention_ms,
            conn,
        } => {
            admin(&conn)
                .await?
                .create_topic(
                    &name,
                    v1::TopicConfig {
                        partitions,
                        retention_bytes,
                        retention_ms,
                        compression: "none".into(),
                    },
                )
                .await?;
            println!("created topic {name} with {partitions} partition(s)");
        }
        TopicCommand::List { conn } => {
            for n in admin(&conn).await?.list_topics().await? {
                println!("{n}");
            }
        }
        TopicCommand::Describe { name, json, conn } => {
            let d = admin(&conn).await?.describe_topic(&name).await?;
            if json {
                let parts: Vec<_> = d
                    .partitions
                    .iter()
                    .map(|p| {
                        serde_json::json!({"partition": p.partition, "start_offset": p.start_offset,
                        "next_offset": p.next_offset, "size_bytes": p.size_bytes, "segments": p.segments})
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"name": d.name, "partitions": parts})
                );
            } else {
                let c = d.config.unwrap_or_default();
                println!(
                    "topic {} partitions={} retention_bytes={} retention_ms={}",
                    d.name, c.partitions, c.retention_bytes, c.retention_ms
                );
                println!(
                    "{:>9} {:>12} {:>12} {:>12} {:>8}",
                    "partition", "start", "next", "bytes", "segments"
                );
                for p in d.partitions {
                    println!(
                        "{:>9} {:>12} {:>12} {:>12} {:>8}",
                        p.partition, p.start_offset, p.next_offset, p.size_bytes, p.segments
                    );
                }
            }
        }
        TopicCommand::Delete { name, conn } => {
            admin(&conn).await?.delete_topic(&name).await?;
            println!("deleted topic {name}");
        }
    }
    Ok(())
}
