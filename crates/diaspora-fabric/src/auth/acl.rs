//! ACL entries and the decision: deny wins, and nothing is allowed that no
//! entry allows.
//!
//! One entry per line of an ACL file:
//!
//! ```text
//! # effect  subject          operation  resource
//! allow     User:alice       write      topic:beam-*
//! allow     Group:trainers   read       topic:beam-frames
//! allow     Group:trainers   commit     group:trainers
//! deny      User:guest       all        topic:*
//! allow     User:ops         alter      cluster
//! ```
//!
//! A resource name ending in `*` is a prefix (`topic:beam-*`); `topic:*` is
//! every topic. `all` is every operation. As in Kafka, an allowed `read`,
//! `write`, `delete`, `alter` or `commit` of a resource implies `describe`
//! of it.

use std::fmt;
use std::str::FromStr;

use super::principal::{valid_name, Principal};

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// The entry allows the operation.
    Allow,
    /// The entry denies it, whatever else allows it.
    Deny,
}

/// Whom an entry is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// One user (`User:NAME`; `User:ANONYMOUS` is the anonymous principal).
    User(String),
    /// Every member of a group (`Group:NAME`).
    Group(String),
    /// Every principal, anonymous included (`User:*`).
    Anyone,
}

/// What is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Fetch items, read payloads.
    Read,
    /// Produce items.
    Write,
    /// Create a topic.
    Create,
    /// Delete a topic, a group's offsets.
    Delete,
    /// List, see metadata and stats.
    Describe,
    /// Change settings, ACLs, tokens, tenants.
    Alter,
    /// Join a consumer group and commit its offsets.
    Commit,
    /// Every operation (in entries only; no request asks for `all`).
    All,
}

/// The kinds of resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// The node itself (ACLs, tokens, tenants, node-wide stats).
    Cluster,
}

/// Which resources of a kind an entry covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ResourcePattern {
    /// Exactly this name.
    Literal(String),
    /// Every name that starts with this.
    Prefix(String),
    /// Every name.
    Any,
}

/// A concrete resource a request touches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Resource {
    /// Its kind.
    pub kind: ResourceKind,
    /// Its name (empty for the cluster).
    pub name: String,
}

impl Resource {
    /// A topic.
    pub fn topic(name: &str) -> Resource {
        Resource {
            kind: ResourceKind::Topic,
            name: name.into(),
        }
    }
    /// A consumer group.
    pub fn group(name: &str) -> Resource {
        Resource {
            kind: ResourceKind::Group,
            name: name.into(),
        }
    }
    /// The node.
    pub fn cluster() -> Resource {
        Resource {
            kind: ResourceKind::Cluster,
            name: String::new(),
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ResourceKind::Topic => write!(f, "topic:{}", self.name),
            ResourceKind::Group => write!(f, "group:{}", self.name),
            ResourceKind::Cluster => f.write_str("cluster"),
        }
    }
}

/// One ACL entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AclEntry {
    /// Allow or deny.
    pub effect: Effect,
    /// Whom it is about.
    pub subject: Subject,
    /// What it allows or denies.
    pub operation: Operation,
    /// The resources' kind.
    pub kind: ResourceKind,
    /// Which of them (always [`ResourcePattern::Any`] for the cluster).
    pub pattern: ResourcePattern,
}

/// Why an ACL line did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ACL line {line}: {message}")]
pub struct AclParseError {
    /// 1-based line number (1 for a single entry).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Longest ACL file, bytes.
pub const ACL_FILE_BYTES_MAX: usize = 4 << 20;
/// Most entries in one ACL file or node.
pub const ACL_ENTRIES_MAX: usize = 100_000;

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        })
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::User(n) => write!(f, "User:{n}"),
            Subject::Group(n) => write!(f, "Group:{n}"),
            Subject::Anyone => f.write_str("User:*"),
        }
    }
}

impl Operation {
    /// Every operation a request can ask for (not [`Operation::All`]).
    pub const EACH: [Operation; 7] = [
        Operation::Read,
        Operation::Write,
        Operation::Create,
        Operation::Delete,
        Operation::Describe,
        Operation::Alter,
        Operation::Commit,
    ];

    /// The lower-case name used in ACL files and errors.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Create => "create",
            Operation::Delete => "delete",
            Operation::Describe => "describe",
            Operation::Alter => "alter",
            Operation::Commit => "commit",
            Operation::All => "all",
        }
    }

    /// Whether an entry for `self` covers a request for `asked`.
    fn covers(self, asked: Operation, effect: Effect) -> bool {
        self == Operation::All
            || self == asked
            // Allowing what acts on a resource lets one see it; a deny
            // denies only what it names.
            || (effect == Effect::Allow
                && asked == Operation::Describe
                && matches!(
                    self,
                    Operation::Read
                        | Operation::Write
                        | Operation::Delete
                        | Operation::Alter
                        | Operation::Commit
                ))
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Operation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Operation::EACH
            .iter()
            .chain([Operation::All].iter())
            .find(|o| o.name() == s)
            .copied()
            .ok_or_else(|| {
                format!("unknown operation {s:?} (read, write, create, delete, describe, alter, commit, all)")
            })
    }
}

impl ResourcePattern {
    fn matches(&self, name: &str) -> bool {
        match self {
            ResourcePattern::Literal(n) => n == name,
            ResourcePattern::Prefix(p) => name.starts_with(p.as_str()),
            ResourcePattern::Any => true,
        }
    }
}

impl AclEntry {
    /// Whether this entry speaks about `principal` (with its `groups`)
    /// doing `operation` on `resource`.
    pub fn applies(
        &self,
        principal: &Principal,
        groups: &[String],
        operation: Operation,
        resource: &Resource,
    ) -> bool {
        let subject = match &self.subject {
            Subject::Anyone => true,
            Subject::User(n) => n == principal.name(),
            Subject::Group(g) => groups.iter().any(|m| m == g),
        };
        subject
            && self.kind == resource.kind
            && self.pattern.matches(&resource.name)
            && self.operation.covers(operation, self.effect)
    }
}

impl fmt::Display for AclEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} ", self.effect, self.subject, self.operation)?;
        let kind = match self.kind {
            ResourceKind::Topic => "topic",
            ResourceKind::Group => "group",
            ResourceKind::Cluster => return f.write_str("cluster"),
        };
        match &self.pattern {
            ResourcePattern::Literal(n) => write!(f, "{kind}:{n}"),
            ResourcePattern::Prefix(p) => write!(f, "{kind}:{p}*"),
            ResourcePattern::Any => write!(f, "{kind}:*"),
        }
    }
}

/// Checks a topic or group name or prefix the way the node names them.
fn resource_name(kind: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {kind} name {:?}: 1–249 characters of A–Z a–z 0–9 . _ -, optionally ending in * for a prefix",
            name.chars().take(64).collect::<String>()
        ))
    }
}

impl FromStr for AclEntry {
    type Err = AclParseError;

    /// One entry: `allow|deny SUBJECT OPERATION RESOURCE`.
    fn from_str(line: &str) -> Result<Self, AclParseError> {
        parse_entry(line).map_err(|message| AclParseError { line: 1, message })
    }
}

fn parse_entry(line: &str) -> Result<AclEntry, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let [effect, subject, operation, resource] = words[..] else {
        return Err(format!(
            "expected `allow|deny SUBJECT OPERATION RESOURCE`, got {} word(s)",
            words.len()
        ));
    };
    let effect = match effect {
        "allow" => Effect::Allow,
        "deny" => Effect::Deny,
        other => return Err(format!("unknown effect {other:?} (allow or deny)")),
    };
    let subject = match subject.split_once(':') {
        Some(("User", "*")) => Subject::Anyone,
        Some(("User", n)) => {
            valid_name("user", n).map_err(|e| e.to_string())?;
            Subject::User(n.into())
        }
        Some(("Group", n)) => {
            valid_name("group", n).map_err(|e| e.to_string())?;
            Subject::Group(n.into())
        }
        _ => {
            return Err(format!(
                "unknown subject {subject:?} (User:NAME, Group:NAME or User:*)"
            ))
        }
    };
    let operation: Operation = operation.parse()?;
    let (kind, pattern) = if resource == "cluster" {
        (ResourceKind::Cluster, ResourcePattern::Any)
    } else {
        let (kind, name) = match resource.split_once(':') {
            Some(("topic", n)) => (ResourceKind::Topic, n),
            Some(("group", n)) => (ResourceKind::Group, n),
            _ => {
                return Err(format!(
                    "unknown resource {resource:?} (topic:NAME, topic:PREFIX*, topic:*, group:..., cluster)"
                ))
            }
        };
        let what = if kind == ResourceKind::Topic {
            "topic"
        } else {
            "group"
        };
        let pattern = if name == "*" {
            ResourcePattern::Any
        } else if let Some(prefix) = name.strip_suffix('*') {
            resource_name(what, prefix)?;
            ResourcePattern::Prefix(prefix.into())
        } else {
            resource_name(what, name)?;
            ResourcePattern::Literal(name.into())
        };
        (kind, pattern)
    };
    Ok(AclEntry {
        effect,
        subject,
        operation,
        kind,
        pattern,
    })
}

/// Parses an ACL file: one entry per line; blank lines and `#` comments
/// (whole-line or trailing) are skipped. The first bad line is the error.
pub fn parse_acl_file(text: &str) -> Result<Vec<AclEntry>, AclParseError> {
    if text.len() > ACL_FILE_BYTES_MAX {
        return Err(AclParseError {
            line: 0,
            message: format!(
                "the file has {} bytes; at most {ACL_FILE_BYTES_MAX} are read",
                text.len()
            ),
        });
    }
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if out.len() == ACL_ENTRIES_MAX {
            return Err(AclParseError {
                line: i + 1,
                message: format!("more than {ACL_ENTRIES_MAX} entries"),
            });
        }
        out.push(parse_entry(line).map_err(|message| AclParseError {
            line: i + 1,
            message,
        })?);
    }
    Ok(out)
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// An entry allows it and none denies it.
    Allowed,
    /// A deny entry matched (it is given), or no entry allows it (`None`).
    Denied(Option<AclEntry>),
}

impl Decision {
    /// Whether the request may go on.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed)
    }
}

/// A set of ACL entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    entries: Vec<AclEntry>,
}

impl Acl {
    /// An ACL of these entries.
    pub fn new(entries: Vec<AclEntry>) -> Acl {
        Acl { entries }
    }

    /// The entries, in order.
    pub fn entries(&self) -> &[AclEntry] {
        &self.entries
    }

    /// Adds an entry unless an equal one is there; returns whether it was added.
    pub fn grant(&mut self, entry: AclEntry) -> bool {
        if self.entries.contains(&entry) {
            return false;
        }
        self.entries.push(entry);
        true
    }

    /// Removes an equal entry; returns whether there was one.
    pub fn revoke(&mut self, entry: &AclEntry) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e != entry);
        before != self.entries.len()
    }

    /// Decides whether `principal`, a member of `groups`, may do
    /// `operation` on `resource`: any matching deny wins; otherwise a
    /// matching allow allows; otherwise it is denied.
    pub fn check(
        &self,
        principal: &Principal,
        groups: &[String],
        operation: Operation,
        resource: &Resource,
    ) -> Decision {
        let mut allowed = false;
        for e in &self.entries {
            if e.applies(principal, groups, operation, resource) {
                match e.effect {
                    Effect::Deny => return Decision::Denied(Some(e.clone())),
                    Effect::Allow => allowed = true,
                }
            }
        }
        if allowed {
            Decision::Allowed
        } else {
            Decision::Denied(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn acl(text: &str) -> Acl {
        Acl::new(parse_acl_file(text).unwrap())
    }

    fn user(n: &str) -> Principal {
        Principal::user(n).unwrap()
    }

    #[test]
    fn deny_wins_and_nothing_is_allowed_by_default() {
        let a = acl("allow User:alice write topic:beam-*   # her beamline\n\
                     deny User:alice write topic:beam-secret\n\
                     allow Group:trainers read topic:beam-frames\n\
                     allow User:* describe topic:public\n");
        let alice = user("alice");
        assert!(a
            .check(&alice, &[], Operation::Write, &Resource::topic("beam-raw"))
            .is_allowed());
        assert!(matches!(
            a.check(&alice, &[], Operation::Write, &Resource::topic("beam-secret")),
            Decision::Denied(Some(e)) if e.effect == Effect::Deny
        ));
        assert_eq!(
            a.check(&alice, &[], Operation::Read, &Resource::topic("beam-raw")),
            Decision::Denied(None)
        );
        // Write implies describe; a group member reads; anyone describes public.
        assert!(a
            .check(
                &alice,
                &[],
                Operation::Describe,
                &Resource::topic("beam-raw")
            )
            .is_allowed());
        let bob = user("bob");
        let trainers = vec!["trainers".to_string()];
        assert!(a
            .check(
                &bob,
                &trainers,
                Operation::Read,
                &Resource::topic("beam-frames")
            )
            .is_allowed());
        assert!(!a
            .check(&bob, &[], Operation::Read, &Resource::topic("beam-frames"))
            .is_allowed());
        assert!(a
            .check(
                &Principal::anonymous(),
                &[],
                Operation::Describe,
                &Resource::topic("public")
            )
            .is_allowed());
        // A topic entry says nothing about a group of the same name.
        assert!(!a
            .check(&alice, &[], Operation::Write, &Resource::group("beam-raw"))
            .is_allowed());
    }

    #[test]
    fn a_deny_of_describe_is_not_implied_by_other_denies() {
        let a = acl("allow User:alice all topic:*\ndeny User:alice read topic:x\n");
        let alice = user("alice");
        assert!(!a
            .check(&alice, &[], Operation::Read, &Resource::topic("x"))
            .is_allowed());
        assert!(a
            .check(&alice, &[], Operation::Describe, &Resource::topic("x"))
            .is_allowed());
    }

    #[test]
    fn bad_lines_name_their_number_and_the_problem() {
        let e =
            parse_acl_file("allow User:a read topic:x\n\nallow User:a fly topic:x\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("unknown operation \"fly\""), "{e}");
        for bad in [
            "permit User:a read topic:x",
            "allow Bob read topic:x",
            "allow User:a read",
            "allow User:a read topic:",
            "allow User:a read topic:a/b",
            "allow User:a read queue:x",
            "allow User:a b read topic:x extra",
        ] {
            assert!(bad.parse::<AclEntry>().is_err(), "{bad}");
        }
    }

    #[test]
    fn grant_and_revoke_are_idempotent() {
        let mut a = Acl::default();
        let e: AclEntry = "allow User:a read topic:x".parse().unwrap();
        assert!(a.grant(e.clone()));
        assert!(!a.grant(e.clone()));
        assert!(a.revoke(&e));
        assert!(!a.revoke(&e));
        assert!(a.entries().is_empty());
    }

    fn name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._-]{1,12}"
    }

    fn entry() -> impl Strategy<Value = AclEntry> {
        let subject = prop_oneof![
            name().prop_map(Subject::User),
            name().prop_map(Subject::Group),
            Just(Subject::Anyone)
        ];
        let op = proptest::sample::select(
            Operation::EACH
                .iter()
                .chain([Operation::All].iter())
                .copied()
                .collect::<Vec<_>>(),
        );
        let resource = prop_oneof![
            name().prop_map(|n| (ResourceKind::Topic, ResourcePattern::Literal(n))),
            name().prop_map(|n| (ResourceKind::Group, ResourcePattern::Prefix(n))),
            Just((ResourceKind::Topic, ResourcePattern::Any)),
            Just((ResourceKind::Cluster, ResourcePattern::Any)),
        ];
        (any::<bool>(), subject, op, resource).prop_map(
            |(allow, subject, operation, (kind, pattern))| AclEntry {
                effect: if allow { Effect::Allow } else { Effect::Deny },
                subject,
                operation,
                kind,
                pattern,
            },
        )
    }

    proptest! {
        #[test]
        fn entries_print_and_parse_back(entries in proptest::collection::vec(entry(), 0..20)) {
            let text: String = entries.iter().map(|e| format!("{e}\n")).collect();
            prop_assert_eq!(parse_acl_file(&text).unwrap(), entries);
        }

        #[test]
        fn a_deny_that_applies_always_wins(entries in proptest::collection::vec(entry(), 0..20),
                                           who in name(), op in 0usize..7, res in name()) {
            let p = Principal::user(&who).unwrap_or_else(|_| Principal::user("x").unwrap());
            let op = Operation::EACH[op];
            let r = Resource::topic(&res);
            let d = Acl::new(entries.clone()).check(&p, &[], op, &r);
            let denied = entries.iter().any(|e| e.effect == Effect::Deny && e.applies(&p, &[], op, &r));
            let allowed = entries.iter().any(|e| e.effect == Effect::Allow && e.applies(&p, &[], op, &r));
            prop_assert_eq!(d.is_allowed(), allowed && !denied);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            crate::auth::fuzzing::acl_file(text.as_bytes());
        }
    }
}
