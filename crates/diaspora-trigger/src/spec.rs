//! A trigger's declaration (TOML): where events come from, which ones it
//! acts on, what it does, how often it retries and where events go whose
//! action keeps failing. Pure: parsing and checking only.
//!
//! ```toml
//! name = "bad-scans"
//! filter = 'scan.kind == "fly" and qa.ssim < 0.5'
//!
//! [source]
//! topic = "frames"          # a fabric topic, or with kind = "kafka" a Kafka topic:
//! start = "earliest"        # where a new trigger starts: earliest | latest
//! # kind = "kafka"
//! # [source.kafka]          # the Kafka service (password: DIASPORA_KAFKA_PASSWORD)
//! # bootstrap = "b-1.msk.example:9096"
//! # security = "sasl_ssl"   # plaintext | ssl | sasl_plaintext | sasl_ssl
//! # sasl_mechanism = "SCRAM-SHA-512"   # or PLAIN, OAUTHBEARER (token_file = "…")
//! # username = "beamline"
//! # ca = "/etc/ssl/msk-ca.pem"
//! # settings = { "client.id" = "trigger" }   # any other librdkafka setting
//!
//! [action]
//! kind = "command"          # command | publish | pool_task | http
//! argv = ["./flag-scan.sh"]
//! timeout_ms = 30000
//!
//! [retry]
//! attempts = 5              # in all, the first included
//! backoff_ms = 200          # doubled after each failure …
//! backoff_max_ms = 10000    # … up to this
//!
//! [dead_letter]
//! topic = "triggers.bad-scans.dlq"   # the default: triggers.NAME.dlq
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::filter::Filter;

/// Longest trigger name, bytes.
pub const NAME_MAX: usize = 128;
/// Largest spec file accepted, bytes.
pub const SPEC_MAX_BYTES: usize = 256 << 10;
/// Most attempts an action may be given.
pub const ATTEMPTS_MAX: u32 = 100;
/// Longest time one attempt may take, ms (an hour).
pub const TIMEOUT_MAX_MS: u64 = 3_600_000;
/// Longest back-off between attempts, ms (ten minutes).
pub const BACKOFF_MAX_MS: u64 = 600_000;

/// The topic every trigger runner publishes its status on.
pub const STATUS_TOPIC: &str = "diaspora.triggers";

/// A trigger. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    /// Its name: `[A-Za-z0-9._-]`, at most [`NAME_MAX`] bytes. It names the
    /// consumer group (`trigger.NAME`), the default dead-letter topic and
    /// every idempotency key.
    pub name: String,
    /// Which events it acts on ([`crate::filter`]); every event when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Where events come from.
    pub source: SourceSpec,
    /// What it does with a matching event.
    pub action: ActionSpec,
    /// Retries of a failing action.
    #[serde(default)]
    pub retry: RetrySpec,
    /// Where events go whose action failed for good.
    #[serde(default)]
    pub dead_letter: DeadLetterSpec,
    /// A provenance store (`sqlite:PATH` or `postgres://…`) in which every
    /// action run is recorded as an activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<String>,
}

/// Where events come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// `fabric` (the default) or `kafka`.
    #[serde(default)]
    pub kind: SourceKind,
    /// The topic.
    pub topic: String,
    /// Where a trigger without a committed position starts.
    #[serde(default)]
    pub start: Start,
    /// The consumer group its position is committed in (default
    /// `trigger.NAME`): on the node, or on the Kafka service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// With `kind = "kafka"`: how to reach the Kafka service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSourceSpec>,
}

/// How a Kafka source reaches its Kafka service. The SASL password is
/// never in the spec: it is read from `DIASPORA_KAFKA_PASSWORD` when the
/// trigger runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceSpec {
    /// `host:port[,host:port…]`.
    pub bootstrap: String,
    /// `plaintext` (the default), `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<String>,
    /// `SCRAM-SHA-256`, `SCRAM-SHA-512`, `PLAIN` or `OAUTHBEARER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_mechanism: Option<String>,
    /// SASL user (SCRAM, PLAIN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// OAUTHBEARER: a file holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// A CA (PEM) to verify the brokers with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Other librdkafka settings, as they are.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
}

impl KafkaSourceSpec {
    /// The connection settings, the password taken from `password`
    /// (`DIASPORA_KAFKA_PASSWORD` when the trigger runs). Checks what can
    /// be checked without connecting.
    pub fn config(
        &self,
        password: Option<String>,
    ) -> Result<diaspora_kafka::config::KafkaConfig, String> {
        let mut k = diaspora_kafka::config::KafkaConfig::new(self.bootstrap.clone());
        if let Some(s) = &self.security {
            k.security = s
                .parse()
                .map_err(|e: String| format!("source.kafka.security: {e}"))?;
        }
        k.mechanism = self
            .sasl_mechanism
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: String| format!("source.kafka.sasl_mechanism: {e}"))?;
        k.username = self.username.clone();
        k.password = password;
        k.token_file = self.token_file.clone();
        k.ca = self.ca.clone();
        k.extra = self.settings.clone();
        Ok(k)
    }
}

/// The kind of source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A diaspora topic.
    #[default]
    Fabric,
    /// A Kafka topic (`[source.kafka]` says where).
    Kafka,
}

/// Where a new trigger starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// From the first retained event.
    #[default]
    Earliest,
    /// Only events appended after it starts.
    Latest,
}

/// What a trigger does with a matching event. Every action is given the
/// event's idempotency key, `TRIGGER:topic/partition/offset`, so that a
/// run repeated after a crash can be recognised by whatever it acts on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ActionSpec {
    /// Runs a program. The event (JSON) is on its stdin; `DIASPORA_TRIGGER`,
    /// `DIASPORA_TRIGGER_KEY`, `DIASPORA_EVENT_TOPIC`, `…_PARTITION`,
    /// `…_OFFSET`, `…_ITEM_KEY` (the item's key, UTF-8 lossily) and
    /// `DIASPORA_TRIGGER_ATTEMPT` (1, 2, …) are in its
    /// environment. Exit 0 is success; an exit code in
    /// `permanent_exit_codes` fails the event for good at once (no retry);
    /// any other failure, or running past `timeout_ms` (it is killed), is
    /// retried.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
        /// Kill an attempt after this long, ms.
        #[serde(default = "default_timeout_ms")]
        timeout_ms: u64,
        /// Extra environment.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
        /// Exit codes that mean "this event will never succeed".
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        permanent_exit_codes: Vec<i32>,
    },
    /// Publishes the event (metadata, and its payload unless
    /// `with_payload = false`) to a fabric topic, keyed by the idempotency
    /// key, with `trigger.name`, `trigger.key` and `trigger.source` added to
    /// its metadata.
    Publish {
        /// The topic.
        topic: String,
        /// Copy the payload too.
        #[serde(default = "yes")]
        with_payload: bool,
    },
    /// Submits a task to a pool (`diaspora pool run`), keyed by the
    /// idempotency key — the pool runs a key once, so a re-submission after
    /// a crash yields no second result. The task's inputs name the event.
    PoolTask {
        /// The pool.
        pool: String,
        /// The task: a pool task kind with its fields, e.g.
        /// `{ kind = "command", argv = ["./reduce", "--scan"] }`.
        task: toml::Table,
    },
    /// POSTs the event (JSON) to a URL (`http://` or `https://`) with an
    /// `Idempotency-Key` header. 2xx is success; 408, 429, 5xx, a refused
    /// connection or a timeout are retried; any other status fails the
    /// event for good.
    Http {
        /// The URL.
        url: String,
        /// Give up on an attempt after this long, ms.
        #[serde(default = "default_timeout_ms")]
        timeout_ms: u64,
        /// Extra headers.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
        /// A CA (PEM) to verify an `https://` server with, besides the
        /// system's roots.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca: Option<PathBuf>,
    },
}

impl ActionSpec {
    /// The action's kind as the spec spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            ActionSpec::Command { .. } => "command",
            ActionSpec::Publish { .. } => "publish",
            ActionSpec::PoolTask { .. } => "pool_task",
            ActionSpec::Http { .. } => "http",
        }
    }
}

fn default_timeout_ms() -> u64 {
    30_000
}

fn yes() -> bool {
    true
}

/// Retries of a failing action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts in all, the first included (1 = no retry).
    pub attempts: u32,
    /// Back-off before the second attempt, ms; doubled after each failure.
    pub backoff_ms: u64,
    /// The longest back-off, ms.
    pub backoff_max_ms: u64,
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            attempts: 5,
            backoff_ms: 200,
            backoff_max_ms: 10_000,
        }
    }
}

impl RetrySpec {
    /// The pause before attempt `next` (2, 3, …): `backoff_ms · 2^(next-2)`,
    /// at most `backoff_max_ms`, less up to a quarter chosen by `jitter`
    /// (any u64; the runner derives it from the event's key) so that
    /// events failing together do not retry in lockstep.
    pub fn backoff(&self, next: u32, jitter: u64) -> std::time::Duration {
        let doublings = next.saturating_sub(2).min(40);
        let full = self
            .backoff_ms
            .saturating_mul(1u64 << doublings)
            .min(self.backoff_max_ms);
        let cut = if full >= 4 { jitter % (full / 4) } else { 0 };
        std::time::Duration::from_millis(full - cut)
    }
}

/// Where events go whose action failed for good.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterSpec {
    /// The topic (default `triggers.NAME.dlq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

/// A spec that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Not TOML of a trigger.
    #[error("{0}")]
    Toml(String),
    /// TOML of a trigger, but something in it cannot work.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(s: impl Into<String>) -> SpecError {
    SpecError::Invalid(s.into())
}

impl TriggerSpec {
    /// Parses and checks a spec.
    pub fn parse(text: &str) -> Result<TriggerSpec, SpecError> {
        if text.len() > SPEC_MAX_BYTES {
            return Err(invalid(format!(
                "the spec is {} bytes, more than the {SPEC_MAX_BYTES} accepted",
                text.len()
            )));
        }
        let spec: TriggerSpec = toml::from_str(text).map_err(|e| SpecError::Toml(e.to_string()))?;
        spec.check()?;
        Ok(spec)
    }

    /// Checks what parsing alone cannot: names, the filter, the action's
    /// fields, the limits.
    pub fn check(&self) -> Result<(), SpecError> {
        check_name("name", &self.name)?;
        self.compiled_filter()?;
        match (self.source.kind, &self.source.kafka) {
            (SourceKind::Kafka, None) => {
                return Err(invalid(
                    "source.kind = \"kafka\" needs [source.kafka] with at least bootstrap = \"HOST:PORT\"",
                ))
            }
            (SourceKind::Fabric, Some(_)) => {
                return Err(invalid(
                    "[source.kafka] is for source.kind = \"kafka\" (the source is a fabric topic)",
                ))
            }
            (SourceKind::Kafka, Some(k)) => {
                if k.bootstrap.trim().is_empty() {
                    return Err(invalid("source.kafka.bootstrap is empty"));
                }
                k.config(None).map_err(|e| invalid(&e))?;
            }
            (SourceKind::Fabric, None) => {}
        }
        check_topic("source.topic", &self.source.topic)?;
        if let Some(g) = &self.source.group {
            check_name("source.group", g)?;
        }
        check_topic("dead_letter.topic", &self.dead_letter_topic())?;
        if self.dead_letter_topic() == self.source.topic {
            return Err(invalid(
                "dead_letter.topic is the source topic: failed events would come back as events",
            ));
        }
        let r = &self.retry;
        if r.attempts == 0 || r.attempts > ATTEMPTS_MAX {
            return Err(invalid(format!(
                "retry.attempts is {}: it must be 1 to {ATTEMPTS_MAX}",
                r.attempts
            )));
        }
        if r.backoff_max_ms > BACKOFF_MAX_MS || r.backoff_ms > r.backoff_max_ms {
            return Err(invalid(format!(
                "retry.backoff_ms ({}) must be at most retry.backoff_max_ms ({}), which must be at most {BACKOFF_MAX_MS}",
                r.backoff_ms, r.backoff_max_ms
            )));
        }
        let timeout = |t: u64, field: &str| {
            if t == 0 || t > TIMEOUT_MAX_MS {
                Err(invalid(format!(
                    "action.{field} is {t}: it must be 1 to {TIMEOUT_MAX_MS} ms"
                )))
            } else {
                Ok(())
            }
        };
        match &self.action {
            ActionSpec::Command {
                argv, timeout_ms, ..
            } => {
                if argv.is_empty() || argv[0].is_empty() {
                    return Err(invalid("action.argv needs a program"));
                }
                timeout(*timeout_ms, "timeout_ms")?;
            }
            ActionSpec::Publish { topic, .. } => {
                check_topic("action.topic", topic)?;
                if *topic == self.source.topic {
                    return Err(invalid(
                        "action.topic is the source topic: every published event would trigger again",
                    ));
                }
            }
            ActionSpec::PoolTask { pool, task } => {
                check_name("action.pool", pool)?;
                self.pool_task_kind(task)?;
            }
            ActionSpec::Http {
                url, timeout_ms, ..
            } => {
                crate::action::HttpTarget::parse(url)
                    .map_err(|e| invalid(format!("action.url: {e}")))?;
                timeout(*timeout_ms, "timeout_ms")?;
            }
        }
        Ok(())
    }

    /// The compiled filter (every event when the spec has none).
    pub fn compiled_filter(&self) -> Result<Filter, SpecError> {
        let text = self.filter.as_deref().unwrap_or("true");
        Filter::parse(text).map_err(|e| {
            let shown: Vec<String> = e.render(text).lines().map(|l| format!("  {l}")).collect();
            invalid(format!("{e}\n{}", shown.join("\n")))
        })
    }

    /// The consumer group the trigger's position is committed in.
    pub fn group(&self) -> String {
        self.source
            .group
            .clone()
            .unwrap_or_else(|| format!("trigger.{}", self.name))
    }

    /// The dead-letter topic.
    pub fn dead_letter_topic(&self) -> String {
        self.dead_letter
            .topic
            .clone()
            .unwrap_or_else(|| format!("triggers.{}.dlq", self.name))
    }

    /// The pool task kind of a `pool_task` action's `task` table.
    pub fn pool_task_kind(
        &self,
        task: &toml::Table,
    ) -> Result<diaspora_pool::messages::TaskKind, SpecError> {
        let v = serde_json::to_value(task).map_err(|e| invalid(format!("action.task: {e}")))?;
        serde_json::from_value(v).map_err(|e| {
            invalid(format!(
                "action.task is not a pool task (kind = \"command\" with argv, \"echo\", \"sleep\" or \"builtin\"): {e}"
            ))
        })
    }
}

fn check_name(field: &str, s: &str) -> Result<(), SpecError> {
    if s.is_empty() || s.len() > NAME_MAX {
        return Err(invalid(format!(
            "{field} must be 1 to {NAME_MAX} bytes, not {}",
            s.len()
        )));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(format!(
            "{field} {s:?} has {c:?}: only letters, digits, '.', '_' and '-' are allowed"
        )));
    }
    Ok(())
}

fn check_topic(field: &str, s: &str) -> Result<(), SpecError> {
    check_name(field, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
[source]
topic = "frames"
[action]
kind = "command"
argv = ["true"]
"#;

    #[test]
    fn a_minimal_spec_takes_the_defaults() {
        let s = TriggerSpec::parse(MINIMAL).unwrap();
        assert_eq!(s.group(), "trigger.t");
        assert_eq!(s.dead_letter_topic(), "triggers.t.dlq");
        assert_eq!(s.retry, RetrySpec::default());
        assert_eq!(s.source.start, Start::Earliest);
        assert!(s.compiled_filter().unwrap().matches(&BTreeMap::new()));
        // It prints back as a spec that parses to the same.
        let again = TriggerSpec::parse(&toml::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn a_bad_filter_is_refused_with_its_column() {
        let text = MINIMAL.replace("name = \"t\"", "name = \"t\"\nfilter = \"a == \"");
        let e = TriggerSpec::parse(&text).unwrap_err().to_string();
        assert!(e.starts_with("filter:"), "{e}");
        assert!(e.contains("column 6"), "{e}");
    }

    #[test]
    fn unknown_fields_kafka_sources_and_loops_are_refused() {
        let e = TriggerSpec::parse(&format!("{MINIMAL}\nbogus = 1\n")).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let kafka = MINIMAL.replace("topic = \"frames\"", "kind = \"kafka\"\ntopic = \"frames\"");
        let e = TriggerSpec::parse(&kafka).unwrap_err();
        assert!(e.to_string().contains("needs [source.kafka]"), "{e}");
        let looped = MINIMAL.replace(
            "kind = \"command\"\nargv = [\"true\"]",
            "kind = \"publish\"\ntopic = \"frames\"",
        );
        let e = TriggerSpec::parse(&looped).unwrap_err();
        assert!(e.to_string().contains("trigger again"), "{e}");
        let dlq_is_source = format!("{MINIMAL}\n[dead_letter]\ntopic = \"frames\"\n");
        assert!(TriggerSpec::parse(&dlq_is_source).is_err());
    }

    #[test]
    fn a_kafka_source_names_its_service_and_keeps_the_password_out() {
        let kafka = MINIMAL.replace(
            "topic = \"frames\"",
            "kind = \"kafka\"\ntopic = \"frames\"\n[source.kafka]\nbootstrap = \"b1:9096\"\n\
             security = \"sasl_ssl\"\nsasl_mechanism = \"SCRAM-SHA-512\"\nusername = \"u\"",
        );
        let s = TriggerSpec::parse(&kafka).unwrap();
        let k = s.source.kafka.as_ref().unwrap();
        // Without the password the settings are refused when it runs.
        assert!(k.config(None).unwrap().settings().is_err());
        let c = k.config(Some("pw".into())).unwrap();
        assert_eq!(c.settings().unwrap()["sasl.mechanism"], "SCRAM-SHA-512");
        assert!(!format!("{c:?}").contains("pw\""));
        for (from, to, says) in [
            ("sasl_ssl", "carrier-pigeon", "source.kafka.security"),
            ("SCRAM-SHA-512", "MD5", "source.kafka.sasl_mechanism"),
            (
                "bootstrap = \"b1:9096\"",
                "bootstrap = \" \"",
                "bootstrap is empty",
            ),
            ("password", "password", "source.kafka"),
        ] {
            if from == "password" {
                let e = TriggerSpec::parse(&format!("{kafka}\npassword = \"x\"\n")).unwrap_err();
                assert!(e.to_string().contains("password"), "{e}");
                continue;
            }
            let e = TriggerSpec::parse(&kafka.replace(from, to)).unwrap_err();
            assert!(e.to_string().contains(says), "{from} → {to}: {e}");
        }
        let fabric_with_kafka = kafka.replace("kind = \"kafka\"\n", "");
        let e = TriggerSpec::parse(&fabric_with_kafka).unwrap_err();
        assert!(e.to_string().contains("is for source.kind"), "{e}");
    }

    #[test]
    fn limits_and_names_are_checked() {
        for (from, to, says) in [
            ("name = \"t\"", "name = \"a b\"", "only letters"),
            ("name = \"t\"", "name = \"\"", "1 to 128"),
            ("argv = [\"true\"]", "argv = []", "needs a program"),
            (
                "argv = [\"true\"]",
                "argv = [\"true\"]\ntimeout_ms = 0",
                "timeout_ms is 0",
            ),
        ] {
            let e = TriggerSpec::parse(&MINIMAL.replace(from, to))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{to}: {e}");
        }
        let e = TriggerSpec::parse(&format!(
            "{MINIMAL}\n[retry]\nattempts = 0\nbackoff_ms = 1\nbackoff_max_ms = 2\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("retry.attempts"), "{e}");
        let e = TriggerSpec::parse(&format!(
            "{MINIMAL}\n[retry]\nattempts = 3\nbackoff_ms = 10\nbackoff_max_ms = 2\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("backoff"), "{e}");
        assert!(TriggerSpec::parse(&" ".repeat(SPEC_MAX_BYTES + 1)).is_err());
    }

    #[test]
    fn pool_tasks_and_urls_are_checked() {
        let pool = MINIMAL.replace(
            "kind = \"command\"\nargv = [\"true\"]",
            "kind = \"pool_task\"\npool = \"epie\"\ntask = { kind = \"command\", argv = [\"echo\", \"hi\"] }",
        );
        let s = TriggerSpec::parse(&pool).unwrap();
        let ActionSpec::PoolTask { task, .. } = &s.action else {
            panic!()
        };
        assert!(matches!(
            s.pool_task_kind(task).unwrap(),
            diaspora_pool::messages::TaskKind::Command { .. }
        ));
        let bad = pool.replace("kind = \"command\", argv", "kind = \"nope\", argv");
        assert!(TriggerSpec::parse(&bad)
            .unwrap_err()
            .to_string()
            .contains("not a pool task"));
        let http = |url: &str| {
            MINIMAL.replace(
                "kind = \"command\"\nargv = [\"true\"]",
                &format!("kind = \"http\"\nurl = \"{url}\""),
            )
        };
        assert!(TriggerSpec::parse(&http("http://127.0.0.1:8080/hook")).is_ok());
        assert!(TriggerSpec::parse(&http("https://hooks.example.org/x?y=1")).is_ok());
        for bad in ["ftp://x/", "http://", "not a url", "http://host:99999/"] {
            assert!(TriggerSpec::parse(&http(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_jitters_by_at_most_a_quarter() {
        let r = RetrySpec {
            attempts: 10,
            backoff_ms: 100,
            backoff_max_ms: 1000,
        };
        let ms = |next, j| r.backoff(next, j).as_millis() as u64;
        assert_eq!(ms(2, 0), 100);
        assert_eq!(ms(3, 0), 200);
        assert_eq!(ms(4, 0), 400);
        assert_eq!(ms(6, 0), 1000);
        assert_eq!(ms(99, 0), 1000);
        for j in [1u64, 7, 24, 1 << 40, u64::MAX] {
            for next in 2..12 {
                let full = ms(next, 0);
                let got = ms(next, j);
                assert!(
                    got <= full && got > full - full / 4 - 1,
                    "{next} {j}: {got} of {full}"
                );
            }
        }
    }
}
