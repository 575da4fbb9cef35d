//! `diaspora prov …`: the provenance store from the command line.
//!
//! Every command takes `--store URL`: a SQLite file (default
//! `diaspora-prov.sqlite`, or `$DIASPORA_PROV_STORE`) or `postgres://…`.
//! The store is blocking code, so commands run on a blocking thread.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use diaspora_provenance::fabric::FabricSink;
use diaspora_provenance::interchange::{self, Scope};
use diaspora_provenance::{
    bench, ActionKind, ActionTarget, Direction, EdgeKind, Kind, Provenance, Record, RecordId,
    TagValue, Target, Validity,
};

use super::{print_report, DataConn};

/// The provenance store a command works on.
#[derive(Args, Clone)]
pub struct StoreArg {
    /// Provenance store: a SQLite file path, or postgres://USER:PASS@HOST/DB
    /// (TLS: ?sslmode=disable|prefer|require|verify-ca|verify-full, default
    /// prefer; verify-* need &sslrootcert=CA.pem).
    #[arg(
        long,
        env = "DIASPORA_PROV_STORE",
        default_value = "diaspora-prov.sqlite"
    )]
    store: String,
}

impl StoreArg {
    fn open(&self) -> Result<Provenance> {
        Provenance::open(&self.store).with_context(|| {
            format!(
                "opening store {}",
                diaspora_provenance::redact_url(&self.store)
            )
        })
    }
}

/// The subcommands of `diaspora prov`.
#[derive(Subcommand)]
pub enum ProvCommand {
    /// Show records: an id, an item (topic/0/17), name:NAME, a tag (scan=17) or model@version.
    Show {
        /// What to show.
        target: String,
        /// At most this many records.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The provenance store.
        #[command(flatten)]
        store: StoreArg,
    },
    /// Walk lineage up (what it came from) or down (what was derived from it).
    Lineage {
        /// Record id.
        id: RecordId,
        /// Towards sources.
        #[arg(long, conflicts_with = "down", required_unless_present = "down")]
        up: bool,
        /// Towards derived records.
        #[arg(long)]
        down: bool,
        /// Levels to walk (all if omitted).
        #[arg(long)]
        depth: Option<usize>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The provenance store.
        #[command(flatten)]
        store: StoreArg,
    },
    /// Invalidate records (and, by default, everything derived from them); runs
    /// the registered actions and records their outcomes.
    Invalidate {
        /// An id, an item (topic/0/17), an offset range (topic/0/10..20, half-open;
        /// 10..=20 inclusive), a tag (scan=17), model@version or name:NAME.
        target: String,
        /// Why (recorded, and shown by `prov why`).
        #[arg(long)]
        cause: String,
        /// Invalidate only the target, not what was derived from it.
        #[arg(long)]
        no_cascade: bool,
        /// Publish notices (and run `publish` actions) on the fabric node at --addr.
        #[arg(long)]
        notify: bool,
        /// Topic for invalidation notices.
        #[arg(long, default_value = diaspora_provenance::NOTICE_TOPIC)]
        notice_topic: String,
        /// The node (for --notify).
        #[command(flatten)]
        conn: DataConn,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The provenance store.
        #[command(flatten)]
        store: StoreArg,
    },
    /// Why is this record invalid: the chain back to the root and the cause.
    Why {
        /// Record id.
        id: RecordId,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The provenance store.
        #[command(flatten)]
        store: StoreArg,
    },
    /// A record's validity at a time (µs since the Unix epoch; default now).
    Validity {
        /// Record id.
        id: RecordId,
        /// Time, µs since the Unix epoch.
        #[arg(long)]
        at: Option<i64>,
        /// The provenance store.
        #[command(flatten)]
        store: StoreArg,
    },
    /// Find records by name, tag or URI.
    Find {
        /// Name (or topic/partition/offset of an item).
        #[arg(long, group = "by")]
        name: Option<String>,
        /// Tag, KEY=VALUE.
        #[arg(long, group = "by")]
        tag: Option<String>,
        /// URI.
        #[arg(long, group = "by")]
        uri: Option<String>,
        /// At most this many records.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// The provenance store.
        #[command(flatten)]
        store: StoreArg,
    },
    /// Add a record; prints its id.
    Add {
        /// The record's kind.
        #[arg(long, value_enum)]
        kind: KindArg,
        /// The record's name.
        #[arg(long)]
        name: String,
        /// Tag KEY=VALUE (typed: bool, integer, float, else string); repeatable.
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// URI; repeatable.
        #[arg(long = "uri")]
        uris: Vec<String>,
        /// Parent ID or ID:KIND (derived, used, generated, trained, revision, inferred); repeatable.
        #[arg(long = "parent")]
        parents: Vec<String>,
        /// The provenance store.
        #[command(flatten)]
        store: StoreArg,
    },
    /// Record that CHILD depends on PARENT (refused if it would close a cycle).
    Derive {
        /// The derived record.
        child: RecordId,
        /// The record it depends on.
        parent: RecordId,
        /// The edge's kind (derived, used, generated, trained, revision, inferred).
        #[arg(long, default_value = "derived")]
        kind: String,
        /// The provenance store.
        #[command(flatten)]
        store: StoreArg,
    },
    /// Make the next version of a model, exposed to records; prints its id.
    UpdateModel {
        /// Any version of the model.
        model: RecordId,
        /// Records it was trained on.
        #[arg(long, value_delimiter = ',', required = true)]
        records: Vec<RecordId>,
        /// The provenance store.
        #[command(flatten)]
        store: StoreArg,
    },
    /// What a model knew at a time: the version then and every record it was trained on.
    ModelAt {
        /// The model's name.
        name: String,
        /// Time, µs since the Unix epoch (default now).
        #[arg(long)]
        at: Option<i64>,
        /// The provenance store.
        #[command(flatten)]
        store: StoreArg,
    },
    /// Register an invalidation action, or list recorded outcomes.
    #[command(subcommand)]
    Action(ActionCommand),
    /// Export as W3C PROV-JSON, Graphviz DOT or Mermaid.
    Export {
        /// The format.
        #[arg(long, value_enum, default_value = "prov-json")]
        format: Format,
        /// Only this record and its lineage up and down.
        #[arg(long)]
        root: Option<RecordId>,
        /// With --root: levels each way.
        #[arg(long)]
        depth: Option<usize>,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The provenance store.
        #[command(flatten)]
        store: StoreArg,
    },
    /// Import (merge) a PROV-JSON document, e.g. another store's export.
    Import {
        /// The PROV-JSON file.
        file: PathBuf,
        /// The provenance store.
        #[command(flatten)]
        store: StoreArg,
    },
    /// Counts of records, edges, invalid records, events, actions.
    Stats {
        /// The provenance store.
        #[command(flatten)]
        store: StoreArg,
    },
    /// Benchmarks (fresh temporary SQLite store unless --store names an empty one).
    #[command(subcommand)]
    Bench(ProvBench),
}

/// The subcommands of `diaspora prov action`.
#[derive(Subcommand)]
pub enum ActionCommand {
    /// Register an action on a record or a tag.
    Add {
        /// Record id to watch.
        #[arg(long, group = "on", required = true)]
        on_record: Option<RecordId>,
        /// Tag KEY=VALUE to watch.
        #[arg(long, group = "on")]
        on_tag: Option<String>,
        /// Run this program (no shell); arguments follow `--`. Templates:
        /// {id} {name} {kind} {cause} {event} {root} {parent} {item} {uri} {version} {tag.KEY}.
        #[arg(long, group = "what", required = true)]
        command: Option<String>,
        /// Publish --message on this fabric topic.
        #[arg(long, group = "what", requires = "message")]
        publish: Option<String>,
        /// Message template for --publish.
        #[arg(long)]
        message: Option<String>,
        /// Call the Rust callback registered under this name.
        #[arg(long, group = "what")]
        callback: Option<String>,
        /// Arguments of --command, after `--` (so give --store and the other
        /// options before the `--`).
        #[arg(last = true)]
        args: Vec<String>,
        /// The provenance store.
        #[command(flatten)]
        store: StoreArg,
    },
    /// Recorded outcomes of action runs.
    Runs {
        /// Only the runs on this record.
        #[arg(long)]
        record: Option<RecordId>,
        /// At most this many runs.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// The provenance store.
        #[command(flatten)]
        store: StoreArg,
    },
}

/// The subcommands of `diaspora prov bench`.
#[derive(Subcommand)]
pub enum ProvBench {
    /// Durable, committed ingest of streamed-item records.
    Ingest {
        /// Records to ingest.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Records per transaction.
        #[arg(long, default_value_t = 100_000)]
        batch: usize,
        /// An empty store to run in (default: a fresh temporary SQLite file).
        #[arg(long)]
        store: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Invalidate the root of a tree of N descendants.
    Cascade {
        /// Descendants of the root.
        #[arg(long, default_value_t = 1_000_000)]
        descendants: u64,
        /// Children per record.
        #[arg(long, default_value_t = 1000)]
        fanout: u64,
        /// An empty store to run in (default: a fresh temporary SQLite file).
        #[arg(long)]
        store: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Upstream lineage queries of a given depth.
    Lineage {
        /// Layers walked per query.
        #[arg(long, default_value_t = 10)]
        depth: usize,
        /// Items per layer.
        #[arg(long, default_value_t = 20_000)]
        width: u64,
        /// Queries timed.
        #[arg(long, default_value_t = 10_000)]
        queries: usize,
        /// An empty store to run in (default: a fresh temporary SQLite file).
        #[arg(long)]
        store: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Braid-DB's Mascot workload.
    Mascot {
        /// Configurations.
        #[arg(long, default_value_t = 100)]
        configs: u64,
        /// Models.
        #[arg(long, default_value_t = 100)]
        models: u64,
        /// Training cycles per model.
        #[arg(long, default_value_t = 5)]
        cycles: u64,
        /// Experiments.
        #[arg(long, default_value_t = 100)]
        experiments: u64,
        /// URIs per record.
        #[arg(long, default_value_t = 3)]
        uris: u64,
        /// An empty store to run in (default: a fresh temporary SQLite file).
        #[arg(long)]
        store: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A record's kind, as `--kind` takes it.
// The variants are the flag's values: doc comments would turn clap's
// one-line list of them into a described one.
#[allow(missing_docs)]
#[derive(Clone, Copy, ValueEnum)]
pub enum KindArg {
    Fact,
    Data,
    Model,
    Activity,
}

/// An export format, as `--format` takes it.
#[allow(missing_docs)]
#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    ProvJson,
    Dot,
    Mermaid,
}

fn kv(s: &str) -> Result<(String, TagValue)> {
    let (k, v) = s
        .split_once('=')
        .with_context(|| format!("{s:?} is not KEY=VALUE"))?;
    anyhow::ensure!(!k.is_empty(), "{s:?}: empty key");
    Ok((k.to_string(), TagValue::infer(v)))
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn describe(p: &mut Provenance, r: &Record) -> Result<String> {
    let mut s = format!("#{} {} {:?}", r.id, r.kind, r.name);
    if let Some(v) = r.version {
        s += &format!(" version {v}");
    }
    s += &format!("\n  time_us  {}", r.time_us);
    for (k, v) in &r.tags {
        s += &format!("\n  tag      {k} = {v}");
    }
    for u in &r.uris {
        s += &format!("\n  uri      {u}");
    }
    if let Some(o) = &r.origin {
        s += &format!("\n  origin   {o}");
    }
    for (pid, k) in &r.parents {
        s += &format!("\n  {:<8} #{pid}", k.name());
    }
    match p.why(r.id)? {
        Some(w) => {
            s += &format!(
                "\n  INVALID  {} (event {}, at {} µs)",
                w.event.cause, w.event.id, w.event.time_us
            );
            let chain: Vec<String> = w
                .chain
                .iter()
                .map(|x| format!("#{} {}", x.record, x.name))
                .collect();
            s += &format!("\n  why      {}", chain.join(" ← "));
        }
        None => s += "\n  valid",
    }
    Ok(s)
}

/// Runs a `prov` command (blocking).
/// Runs a `diaspora prov` command (blocking: call it on a blocking
/// thread; `rt` runs what needs the fabric).
pub fn run(cmd: ProvCommand, rt: tokio::runtime::Handle) -> Result<()> {
    match cmd {
        ProvCommand::Show {
            target,
            limit,
            json,
            store,
        } => {
            let mut p = store.open()?;
            let t = Target::parse(&target)?;
            let ids = p.resolve(&t)?;
            if ids.is_empty() {
                bail!("nothing matches {target}");
            }
            let mut out = Vec::new();
            for id in ids.iter().take(limit) {
                out.push(p.get(*id)?);
            }
            if json {
                let v: Vec<serde_json::Value> = out
                    .iter()
                    .map(|r| {
                        let mut j = serde_json::to_value(r).expect("serializable");
                        j["why"] =
                            serde_json::to_value(p.why(r.id).ok().flatten()).expect("serializable");
                        j
                    })
                    .collect();
                print_json(&v)?;
            } else {
                for r in &out {
                    println!("{}", describe(&mut p, r)?);
                }
                if ids.len() > limit {
                    println!("… {} more (raise --limit)", ids.len() - limit);
                }
            }
        }
        ProvCommand::Lineage {
            id,
            up,
            down: _,
            depth,
            json,
            store,
        } => {
            let mut p = store.open()?;
            let dir = if up { Direction::Up } else { Direction::Down };
            let l = p.lineage(id, dir, depth)?;
            if json {
                return print_json(&l);
            }
            let ids: Vec<RecordId> = l.nodes.iter().map(|n| n.0).collect();
            let recs: std::collections::HashMap<RecordId, Record> = p
                .backend()
                .records(&ids)?
                .into_iter()
                .map(|r| (r.id, r))
                .collect();
            for (id, d) in &l.nodes {
                let r = &recs[id];
                let bad = if p.is_invalid(*id)? { "  INVALID" } else { "" };
                println!("{}#{} {} {:?}{bad}", "  ".repeat(*d), id, r.kind, r.name);
            }
            if l.truncated {
                println!("(truncated at {} records)", l.nodes.len());
            }
        }
        ProvCommand::Invalidate {
            target,
            cause,
            no_cascade,
            notify,
            notice_topic,
            conn,
            json,
            store,
        } => {
            let mut p = store.open()?;
            if notify {
                let client = rt
                    .block_on(diaspora_fabric::Client::connect(conn.client_config()))
                    .with_context(|| format!("connecting to the fabric at {}", conn.addr))?;
                p.set_event_sink(
                    std::sync::Arc::new(FabricSink::start(client, &rt)),
                    Some(notice_topic),
                );
            }
            let rep = p.invalidate(&Target::parse(&target)?, &cause, !no_cascade)?;
            if json {
                return print_json(&rep);
            }
            println!(
                "event {}: {} record(s) newly invalid ({} already were) from {} root(s) in {:.3} s",
                rep.event,
                rep.invalidated,
                rep.already_invalid,
                rep.roots.len(),
                rep.elapsed_s
            );
            if rep.actions_run > 0 {
                println!(
                    "actions: {} run, {} failed (see `prov action runs`)",
                    rep.actions_run, rep.actions_failed
                );
            }
            if rep.notices_published > 0 {
                println!("notices published: {}", rep.notices_published);
            }
        }
        ProvCommand::Why { id, json, store } => {
            let mut p = store.open()?;
            let w = p.why(id)?;
            if json {
                return print_json(&w);
            }
            match w {
                None => println!("#{id} is valid"),
                Some(w) => {
                    println!(
                        "#{id} is invalid: {} (event {}, {} µs)",
                        w.event.cause, w.event.id, w.event.time_us
                    );
                    for (i, s) in w.chain.iter().enumerate() {
                        let role = if i + 1 == w.chain.len() {
                            "  (root)"
                        } else {
                            ""
                        };
                        println!(
                            "  {}#{} {} {:?}{role}",
                            if i == 0 { "" } else { "← " },
                            s.record,
                            s.kind,
                            s.name
                        );
                    }
                }
            }
        }
        ProvCommand::Validity { id, at, store } => {
            let mut p = store.open()?;
            let t = at.unwrap_or_else(|| p.now());
            match p.validity_at(id, t)? {
                Validity::Valid => println!("#{id} was valid at {t}"),
                Validity::NotYetRecorded => println!("#{id} was not yet recorded at {t}"),
                Validity::Invalid {
                    event,
                    since_us,
                    cause,
                } => {
                    println!("#{id} was invalid at {t}: {cause} (event {event}, since {since_us})")
                }
            }
        }
        ProvCommand::Find {
            name,
            tag,
            uri,
            limit,
            store,
        } => {
            let mut p = store.open()?;
            let ids = match (name, tag, uri) {
                (Some(n), _, _) => p.find_name(&n, limit)?,
                (_, Some(t), _) => {
                    let (k, v) = kv(&t)?;
                    p.find_tag(&k, &v, limit)?
                }
                (_, _, Some(u)) => p.find_uri(&u, limit)?,
                _ => bail!("give --name, --tag or --uri"),
            };
            for r in p.backend().records(&ids)? {
                println!("#{} {} {:?}", r.id, r.kind, r.name);
            }
        }
        ProvCommand::Add {
            kind,
            name,
            tags,
            uris,
            parents,
            store,
        } => {
            let mut p = store.open()?;
            let kind = match kind {
                KindArg::Fact => Kind::Fact,
                KindArg::Data => Kind::Data,
                KindArg::Model => Kind::Model,
                KindArg::Activity => Kind::Activity,
            };
            let mut r = Record::new(kind, name);
            for t in tags {
                let (k, v) = kv(&t)?;
                r.tags.insert(k, v);
            }
            r.uris = uris;
            for s in parents {
                let (id, k) = match s.split_once(':') {
                    Some((id, k)) => (id, k.parse::<EdgeKind>()?),
                    None => (s.as_str(), EdgeKind::Derived),
                };
                r.parents
                    .push((id.parse().with_context(|| format!("parent {s:?}"))?, k));
            }
            println!("{}", p.add(r)?);
        }
        ProvCommand::Derive {
            child,
            parent,
            kind,
            store,
        } => {
            let mut p = store.open()?;
            p.derive(child, parent, kind.parse()?)?;
            println!("#{child} now depends on #{parent} ({kind})");
        }
        ProvCommand::UpdateModel {
            model,
            records,
            store,
        } => {
            let mut p = store.open()?;
            let id = p.update_model(model, &records)?;
            let r = p.get(id)?;
            println!("{id}");
            eprintln!("{} version {} (#{id})", r.name, r.version.unwrap_or(0));
        }
        ProvCommand::ModelAt { name, at, store } => {
            let mut p = store.open()?;
            let t = at.unwrap_or_else(|| p.now());
            match p.model_at(&name, t)? {
                None => println!("model {name:?} had no version at {t}"),
                Some(k) => print_json(&k)?,
            }
        }
        ProvCommand::Action(ActionCommand::Add {
            on_record,
            on_tag,
            command,
            publish,
            message,
            callback,
            args,
            store,
        }) => {
            let mut p = store.open()?;
            let target = match (on_record, on_tag) {
                (Some(id), _) => ActionTarget::Record(id),
                (_, Some(t)) => {
                    let (key, v) = kv(&t)?;
                    ActionTarget::Tag {
                        key,
                        value: v.text(),
                    }
                }
                _ => bail!("give --on-record or --on-tag"),
            };
            let kind = match (command, publish, callback) {
                (Some(program), _, _) => ActionKind::Command { program, args },
                (_, Some(topic), _) => ActionKind::Publish {
                    topic,
                    message: message.unwrap_or_default(),
                },
                (_, _, Some(name)) => ActionKind::Callback { name },
                _ => bail!("give --command, --publish or --callback"),
            };
            println!("{}", p.register_action(target, kind)?);
        }
        ProvCommand::Action(ActionCommand::Runs {
            record,
            limit,
            store,
        }) => {
            let mut p = store.open()?;
            for r in p.action_runs(record, limit)? {
                println!(
                    "action {} on #{} (event {}): {} — {}",
                    r.action,
                    r.record,
                    r.event,
                    if r.ok { "ok" } else { "FAILED" },
                    r.detail
                );
            }
        }
        ProvCommand::Export {
            format,
            root,
            depth,
            out,
            store,
        } => {
            let mut p = store.open()?;
            let scope = match root {
                Some(root) => Scope::Around { root, depth },
                None => Scope::All,
            };
            let text = match format {
                Format::ProvJson => {
                    serde_json::to_string_pretty(&interchange::export_prov_json(&mut p, &scope)?)?
                }
                Format::Dot => interchange::export_dot(&mut p, &scope)?,
                Format::Mermaid => interchange::export_mermaid(&mut p, &scope)?,
            };
            match out {
                Some(path) => {
                    std::fs::write(&path, text)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                None => {
                    let mut o = std::io::stdout().lock();
                    o.write_all(text.as_bytes())?;
                    o.write_all(b"\n")?;
                }
            }
        }
        ProvCommand::Import { file, store } => {
            let mut p = store.open()?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            print_json(&interchange::import_prov_json(&mut p, &bytes)?)?;
        }
        ProvCommand::Stats { store } => {
            let mut p = store.open()?;
            print_json(&p.counts()?)?;
        }
        ProvCommand::Bench(b) => match b {
            ProvBench::Ingest {
                records,
                batch,
                store,
                json,
            } => {
                let r = bench::ingest(store.as_deref(), records, batch)?;
                print_report(&r, json, |r| {
                    format!(
                        "ingest: {} records in {:.2} s = {:.0} records/s ({})",
                        r.records, r.elapsed_s, r.records_per_s, r.store
                    )
                })?;
            }
            ProvBench::Cascade {
                descendants,
                fanout,
                store,
                json,
            } => {
                let r = bench::cascade(store.as_deref(), descendants, fanout)?;
                print_report(&r, json, |r| {
                    format!(
                        "cascade: {} records invalidated in {:.3} s ({})",
                        r.invalidated, r.cascade_s, r.store
                    )
                })?;
            }
            ProvBench::Lineage {
                depth,
                width,
                queries,
                store,
                json,
            } => {
                let r = bench::lineage(store.as_deref(), depth, width, queries)?;
                print_report(&r, json, |r| {
                    format!(
                    "lineage depth {}: p50 {:.0} µs, p99 {:.0} µs over {} queries ({:.1} records each)",
                    r.depth, r.query_us_p50, r.query_us_p99, r.queries, r.records_per_query
                    )
                })?;
            }
            ProvBench::Mascot {
                configs,
                models,
                cycles,
                experiments,
                uris,
                store,
                json,
            } => {
                let r =
                    bench::mascot(store.as_deref(), configs, models, cycles, experiments, uris)?;
                print_report(&r, json, |r| {
                    format!(
                        "mascot: {} rows in {:.2} s = {:.0} rows/s ({})",
                        r.rows, r.elapsed_s, r.rows_per_s, r.store
                    )
                })?;
            }
        },
    }
    Ok(())
}
