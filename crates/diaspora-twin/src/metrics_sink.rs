//! The twin's link metrics during a run: a [`LinkSampler`] polled by the
//! runner, its events appended to a file and/or published on a node's topic
//! through a `diaspora produce` process fed on stdin, and the links'
//! saturation episodes found from them.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use crate::cli_args::{CreateTopic, Invocation, Produce};
use crate::hosts::HostEnv;
use crate::metrics::LinkSampler;
use crate::runner::MetricsOptions;
use crate::scenario::MetricsSpec;
use crate::{LinkParams, Relay, TwinError};

/// The metrics options of a run: the command line's, else the scenario's
/// `[metrics]` (a command line without a topic publishes on the
/// scenario's).
pub(crate) fn resolve(
    options: &Option<MetricsOptions>,
    scenario: &Option<MetricsSpec>,
) -> Option<MetricsOptions> {
    match (options, scenario) {
        (Some(m), Some(sm)) if m.publish.is_none() => Some(MetricsOptions {
            publish: Some((sm.node.clone(), sm.topic.clone())),
            ..m.clone()
        }),
        (Some(m), _) => Some(m.clone()),
        (None, Some(sm)) => Some(MetricsOptions {
            interval: Duration::from_millis(sm.interval_ms),
            out: None,
            publish: Some((sm.node.clone(), sm.topic.clone())),
        }),
        (None, None) => None,
    }
}

/// The commands that publish metrics on `topic` of `node`: creating the
/// topic, and the producer fed on stdin.
pub(crate) fn publisher_invocations(
    env: &HostEnv,
    node: &str,
    topic: &str,
) -> Result<(Invocation, Invocation), TwinError> {
    let a = env.nodes.get(node).ok_or_else(|| TwinError::NoSuch {
        what: "metrics",
        kind: "node",
        name: node.to_string(),
    })?;
    let create = Invocation::CreateTopic(CreateTopic {
        topic: topic.to_string(),
        stream: false,
        partitions: None,
        admin: a.admin,
        ca: a.ca.clone(),
    });
    let publish = Invocation::Produce(Produce {
        stream: None,
        topic: topic.to_string(),
        synthetic: None,
        addr: a.data,
        ca: a.ca.clone(),
    });
    Ok((create, publish))
}

/// A link's saturation state (see `MetricsSink::poll`).
#[derive(Default)]
struct Saturation {
    inside: bool,
    over: u64,
    under: u64,
    outside: u64,
    onsets: Vec<f64>,
}

/// The sampler and its outputs.
pub(crate) struct MetricsSink {
    sampler: LinkSampler,
    /// Per link: the saturation episodes so far.
    saturation: HashMap<String, Saturation>,
    out: Option<std::io::BufWriter<File>>,
    producer: Option<Child>,
}

impl MetricsSink {
    /// Starts sampling the links (base parameters `base`) of a run that
    /// started at `t0`; starts the publisher, creating its topic if absent.
    pub(crate) fn start(
        options: &MetricsOptions,
        scenario: &str,
        base: &HashMap<String, (LinkParams, LinkParams)>,
        env: &HostEnv,
        binary: &std::path::Path,
        identity: &[(String, String)],
        t0: Instant,
    ) -> Result<MetricsSink, TwinError> {
        let mut sampler = LinkSampler::new(scenario, options.interval, t0);
        for (name, (up, _)) in base {
            sampler.set_capacity(name, up.bandwidth_bps);
        }
        let out = match &options.out {
            None => None,
            Some(p) => Some(std::io::BufWriter::new(
                File::create(p).map_err(TwinError::io("create", p))?,
            )),
        };
        let producer = match &options.publish {
            None => None,
            Some((node, topic)) => {
                let (create, publish) = publisher_invocations(env, node, topic)?;
                // Absent or already there: either way it exists after this.
                let _ = Command::new(binary)
                    .args(create.argv())
                    .envs(identity.iter().map(|(k, v)| (k, v)))
                    .output();
                Some(
                    Command::new(binary)
                        .args(publish.argv())
                        .envs(identity.iter().map(|(k, v)| (k, v)))
                        .stdin(Stdio::piped())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .map_err(|source| TwinError::Command {
                            what: "metrics publisher",
                            source,
                        })?,
                )
            }
        };
        Ok(MetricsSink {
            sampler,
            saturation: HashMap::new(),
            out,
            producer,
        })
    }

    /// A link's capacity changed (a fault): 0 in an outage.
    pub(crate) fn set_capacity(&mut self, link: &str, bps: Option<u64>) {
        self.sampler.set_capacity(link, bps);
    }

    pub(crate) fn poll(&mut self, relays: &HashMap<String, Relay>) {
        use std::io::Write;
        let Some(ev) = self.sampler.poll(relays) else {
            return;
        };
        // Saturation episodes, with hysteresis: one starts at the first of
        // two samples in a row at or over 0.95, after 10 s outside an
        // episode; it ends once the utilisation stays under 0.85 for 5 s.
        let per_s = 1000 / ev.interval_ms.max(1);
        let (quiet, clear) = ((10 * per_s).max(1), (5 * per_s).max(1));
        let elapsed = ev
            .samples
            .iter()
            .find(|x| x.name == "twin.elapsed_s")
            .map_or(0.0, |x| x.value);
        for x in ev.samples.iter().filter(|x| x.name == "link.utilisation") {
            let link = x.labels.get("link").cloned().unwrap_or_default();
            let st = self.saturation.entry(link).or_default();
            if st.inside {
                st.under = if x.value < 0.85 { st.under + 1 } else { 0 };
                if st.under >= clear {
                    (st.inside, st.under, st.outside, st.over) = (false, 0, 0, 0);
                }
            } else if x.value >= 0.95 {
                st.over += 1;
                if st.over == 2 {
                    if st.outside >= quiet {
                        st.onsets.push(elapsed - ev.interval_ms as f64 / 1e3);
                    }
                    (st.inside, st.under) = (true, 0);
                }
            } else {
                st.outside += st.over + 1;
                st.over = 0;
            }
        }
        let mut line = diaspora_telemetry::encode_event(&ev);
        line.push(b'\n');
        if let Some(f) = &mut self.out {
            if let Err(e) = f.write_all(&line).and_then(|_| f.flush()) {
                tracing::warn!(error = %e, "twin metrics: cannot write; stopping the file");
                self.out = None;
            }
        }
        if let Some(stdin) = self.producer.as_mut().and_then(|p| p.stdin.as_mut()) {
            if let Err(e) = stdin.write_all(&line).and_then(|_| stdin.flush()) {
                tracing::warn!(error = %e, "twin metrics: the publisher went away");
                self.producer = None;
            }
        }
    }

    /// Sleeps until the next sample or `max`, whichever is sooner.
    pub(crate) async fn sleep(sink: &Option<MetricsSink>, max: Duration) {
        let until = Instant::now() + max;
        let until = sink
            .as_ref()
            .map_or(until, |s| s.sampler.next_due().min(until));
        tokio::time::sleep_until(until).await;
    }

    /// Ends the publisher; per link, the saturation onsets.
    pub(crate) fn finish(mut self) -> BTreeMap<String, Vec<f64>> {
        if let Some(mut p) = self.producer.take() {
            drop(p.stdin.take());
            let _ = p.wait();
        }
        self.saturation
            .drain()
            .map(|(link, st)| (link, st.onsets))
            .collect()
    }
}
