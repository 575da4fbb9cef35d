//! Invalidation actions: what runs when a record an action targets is
//! newly invalidated (a command, a fabric publish, a Rust callback; see
//! [`ActionKind`]), the `{…}` placeholders their templates take
//! ([`fill`]), and the recording of their outcomes. Registering an action
//! and the cascade that triggers it are [`crate::Provenance`]'s.

use crate::backend::Backend;
use crate::model::*;
use crate::store::{EventSink, InvalidationReport, Limits};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What an action sees when it runs.
#[derive(Debug, Clone, Serialize)]
pub struct ActionContext {
    /// The invalidated record.
    pub record: Record,
    /// The invalidation event.
    pub event: InvalidationEvent,
    /// The parent whose invalidation cascaded here (none for a root).
    pub parent: Option<RecordId>,
    /// The root of the cascade that reached this record.
    pub root: RecordId,
}

/// A Rust invalidation callback: returns a detail line, or an error.
pub type Callback =
    Arc<dyn Fn(&ActionContext) -> std::result::Result<String, String> + Send + Sync>;

/// Checks an action's kind before it is registered.
pub(crate) fn check_kind(kind: &ActionKind) -> Result<()> {
    if let ActionKind::Command { program, .. } = kind {
        if program.trim().is_empty() {
            return Err(ProvError::Invalid(
                "a command action needs a program".into(),
            ));
        }
    }
    Ok(())
}

/// What running an invalidation's actions needs of its store.
pub(crate) struct ActionRunner<'a> {
    /// Where actions and their outcomes are kept.
    pub backend: &'a mut dyn Backend,
    /// The Rust callbacks registered in this process, by name.
    pub callbacks: &'a HashMap<String, Callback>,
    /// Where `publish` actions go.
    pub sink: Option<&'a Arc<dyn EventSink>>,
    /// Bounds: actions per event, detail bytes, command timeout.
    pub limits: &'a Limits,
    /// The store's clock (µs since the Unix epoch).
    pub now: &'a (dyn Fn() -> i64 + Send + Sync),
}

impl ActionRunner<'_> {
    /// Runs the actions due for the records `newly` invalidated by `event`
    /// (`rows`: each record's parent in the cascade), at most
    /// `limits.actions_per_event_max`, and records their outcomes.
    pub(crate) fn run(
        &mut self,
        event: &InvalidationEvent,
        newly: &[RecordId],
        rows: &[(RecordId, Option<RecordId>)],
        report: &mut InvalidationReport,
    ) -> Result<()> {
        let actions = self.backend.actions()?;
        if actions.is_empty() {
            return Ok(());
        }
        let parent_of: HashMap<RecordId, Option<RecordId>> = rows.iter().copied().collect();
        let newly_set: HashSet<RecordId> = newly.iter().copied().collect();
        let mut due: Vec<(RecordId, &Action)> = Vec::new();
        for a in &actions {
            match &a.target {
                ActionTarget::Record(id) => {
                    if newly_set.contains(id) {
                        due.push((*id, a));
                    }
                }
                ActionTarget::Tag { key, value } => {
                    for chunk in newly.chunks(1 << 16) {
                        for id in self.backend.with_tag(key, value, chunk)? {
                            due.push((id, a));
                        }
                    }
                }
            }
        }
        due.sort_by_key(|(r, a)| (*r, a.id));
        let skipped = due.len().saturating_sub(self.limits.actions_per_event_max);
        due.truncate(self.limits.actions_per_event_max);
        let ids: Vec<RecordId> = {
            let mut v: Vec<RecordId> = due.iter().map(|d| d.0).collect();
            v.dedup();
            v
        };
        let recs: HashMap<RecordId, Record> = ids
            .chunks(4096)
            .map(|c| self.backend.records(c))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .map(|r| (r.id, r))
            .collect();
        let mut runs = Vec::with_capacity(due.len() + 1);
        for (rid, action) in due {
            let Some(record) = recs.get(&rid) else {
                continue;
            };
            let mut root = rid;
            let mut hops = 0;
            while let Some(Some(p)) = parent_of.get(&root) {
                root = *p;
                hops += 1;
                if hops > parent_of.len() {
                    break;
                }
            }
            let ctx = ActionContext {
                record: record.clone(),
                event: event.clone(),
                parent: parent_of.get(&rid).copied().flatten(),
                root,
            };
            let (ok, detail) = match self.run_one(&action.kind, &ctx) {
                Ok(d) => (true, d),
                Err(d) => (false, d),
            };
            report.actions_run += 1;
            if !ok {
                report.actions_failed += 1;
            }
            runs.push(ActionRun {
                action: action.id,
                record: rid,
                event: event.id,
                time_us: (self.now)(),
                ok,
                detail: truncate(detail, self.limits.detail_bytes_max),
            });
        }
        if skipped > 0 {
            runs.push(ActionRun {
                action: 0,
                record: report.roots[0],
                event: event.id,
                time_us: (self.now)(),
                ok: false,
                detail: format!(
                    "limit: {skipped} further action runs skipped (actions_per_event_max = {})",
                    self.limits.actions_per_event_max
                ),
            });
            report.actions_failed += skipped as u64;
        }
        self.backend.insert_action_runs(&runs)
    }

    /// Runs one action; the outcome's detail, or the error.
    fn run_one(
        &self,
        kind: &ActionKind,
        ctx: &ActionContext,
    ) -> std::result::Result<String, String> {
        match kind {
            ActionKind::Command { program, args } => {
                let args: Vec<String> = args.iter().map(|a| fill(a, ctx)).collect();
                run_command(&fill(program, ctx), &args, self.limits.command_timeout)
            }
            ActionKind::Publish { topic, message } => {
                let sink = self.sink.as_ref().ok_or_else(|| {
                    "no event sink: open the store with a fabric connection".to_string()
                })?;
                let topic = fill(topic, ctx);
                sink.publish(&topic, fill(message, ctx).into_bytes())?;
                Ok(format!("published on {topic}"))
            }
            ActionKind::Callback { name } => match self.callbacks.get(name) {
                Some(f) => f(ctx),
                None => Err(format!(
                    "no callback {name:?} is registered in this process"
                )),
            },
        }
    }
}

/// `s` cut to at most `max` bytes (on a character boundary), then `…`.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Fills a template from an action's context.
pub fn fill(template: &str, ctx: &ActionContext) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(j) = after.find('}') else {
            out.push_str(&rest[i..]);
            return out;
        };
        let key = &after[..j];
        let r = &ctx.record;
        let v = match key {
            "id" => Some(r.id.to_string()),
            "name" => Some(r.name.clone()),
            "kind" => Some(r.kind.to_string()),
            "cause" => Some(ctx.event.cause.clone()),
            "event" => Some(ctx.event.id.to_string()),
            "root" => Some(ctx.root.to_string()),
            "parent" => Some(ctx.parent.map(|p| p.to_string()).unwrap_or_default()),
            "time_us" => Some(ctx.event.time_us.to_string()),
            "uri" => Some(r.uris.first().cloned().unwrap_or_default()),
            "item" => Some(r.item.as_ref().map(|l| l.to_string()).unwrap_or_default()),
            "version" => Some(r.version.map(|v| v.to_string()).unwrap_or_default()),
            k => k
                .strip_prefix("tag.")
                .map(|t| r.tags.get(t).map(|v| v.text()).unwrap_or_default()),
        };
        match v {
            Some(v) => {
                out.push_str(&v);
                rest = &after[j + 1..];
            }
            None => {
                // Not a placeholder (JSON braces, say): keep the brace and
                // go on scanning right after it.
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Runs a program without a shell, killing it at `timeout`; success is
/// exit status 0. The detail is its exit status and output.
fn run_command(
    program: &str,
    args: &[String],
    timeout: Duration,
) -> std::result::Result<String, String> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = o.take(64 << 10).read_to_string(&mut s);
        }
        if let Some(e) = err.as_mut() {
            let _ = e.take(64 << 10).read_to_string(&mut s);
        }
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{program}: killed after {} s",
                    timeout.as_secs_f64()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("{program}: {e}")),
        }
    };
    let output = reader.join().unwrap_or_default();
    let output = output.trim();
    let detail = if output.is_empty() {
        format!("{status}")
    } else {
        format!("{status}: {output}")
    };
    if status.success() {
        Ok(detail)
    } else {
        Err(detail)
    }
}
