//! The loop behind `diaspora view run`: a [`View`] delivered as JSON lines
//! until a count, an idle time or a [`Stop`].
//!
//! Each view item becomes one line `{"seq","id","key","invalid","members"}`
//! (the id as 16 hex digits) and is acknowledged once written; each
//! retraction becomes `{"retract","cause"}`. The command line opens the
//! view, wires its metrics and prints the summary; this module only runs it.
//!
//! What it does not do: snapshot or close the view (the caller decides
//! whether to keep a snapshot at the end).

use std::io::Write;
use std::time::Duration;

use diaspora_fabric::Stop;

use crate::runner::View;
use crate::ViewError;

/// When [`run`] stops (besides the [`Stop`]).
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// After this many view items (`None`: no limit).
    pub max_items: Option<u64>,
    /// After this long without a view item (`None`: never).
    pub idle: Option<Duration>,
}

/// Delivers `view` to `out` until a limit of `opts` or `stop`; returns the
/// number of view items written. `observe` sees the view after every wait
/// (for metrics). The output is flushed after every step, so a reader of a
/// pipe sees each item as it is emitted.
pub async fn run(
    view: &mut View,
    out: &mut impl Write,
    opts: &ServeOptions,
    stop: &Stop,
    mut observe: impl FnMut(&View),
) -> Result<u64, ViewError> {
    let mut n = 0u64;
    let mut idle = Duration::ZERO;
    let step = Duration::from_millis(500);
    let werr = |source| ViewError::Output { source };
    loop {
        if opts.max_items.is_some_and(|max| n >= max) || opts.idle.is_some_and(|i| idle >= i) {
            break;
        }
        let got = tokio::select! {
            _ = stop.wait() => break,
            got = view.next(step) => got?,
        };
        observe(view);
        match got {
            Some(d) => {
                idle = Duration::ZERO;
                n += 1;
                let line = serde_json::json!({
                    "seq": d.seq,
                    "id": format!("{:016x}", d.id()),
                    "key": d.item.key,
                    "invalid": d.invalid,
                    "members": d.item.members,
                });
                writeln!(out, "{line}").map_err(werr)?;
                view.ack(d.id());
            }
            None => idle += step,
        }
        for r in view.take_retractions() {
            let line = serde_json::json!({"retract": format!("{:016x}", r.id), "cause": r.cause});
            writeln!(out, "{line}").map_err(werr)?;
        }
        out.flush().map_err(werr)?;
    }
    out.flush().map_err(werr)?;
    Ok(n)
}
