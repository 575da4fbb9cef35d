//! Graphviz DOT and Mermaid renderings of a scope.

use super::scope::{Pager, Scope};
use crate::model::*;
use crate::store::Provenance;
use std::fmt::Write as _;

/// Calls `f` with every record of the scope, its invalidation cause (if
/// invalid) and its parents inside the scope.
fn visit_graph(
    prov: &mut Provenance,
    scope: &Scope,
    mut f: impl FnMut(&Record, Option<&str>, &[(RecordId, EdgeKind)]),
) -> Result<()> {
    let mut pager = Pager::new(prov, scope)?;
    while let Some((page, invalid)) = pager.next(prov)? {
        for r in &page {
            let parents: Vec<(RecordId, EdgeKind)> = r
                .parents
                .iter()
                .copied()
                .filter(|(p, _)| pager.in_scope(*p))
                .collect();
            let cause = invalid
                .get(&r.id)
                .map(|(_, ev)| ev.as_ref().map_or("invalid", |e| e.cause.as_str()));
            f(r, cause, &parents);
        }
    }
    Ok(())
}

fn node_id(id: RecordId) -> String {
    if id < 0 {
        format!("rn{}", id.unsigned_abs())
    } else {
        format!("r{id}")
    }
}

fn kind_text(r: &Record) -> String {
    match (r.kind, r.version) {
        (Kind::Model, Some(v)) => format!("model v{v}"),
        (k, _) => k.name().to_string(),
    }
}

/// Escapes `s` for a quoted label: a character `subst` names becomes its
/// replacement, a line break (`\n`, `\r\n` or a lone `\r`) `newline`,
/// any other control character a space.
fn escape_label(s: &str, newline: &str, subst: impl Fn(char) -> Option<&'static str>) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => out.push_str(newline),
            '\r' => {
                if chars.peek() != Some(&'\n') {
                    out.push_str(newline);
                }
            }
            c => match subst(c) {
                Some(r) => out.push_str(r),
                None if c.is_control() => out.push(' '),
                None => out.push(c),
            },
        }
    }
    out
}

/// Escapes text for a double-quoted Graphviz string used as a label:
/// `"` and `\` are backslash-escaped, a line break becomes `\n`, other
/// control characters a space.
pub(crate) fn dot_escape(s: &str) -> String {
    escape_label(s, "\\n", |c| match c {
        '"' => Some("\\\""),
        '\\' => Some("\\\\"),
        _ => None,
    })
}

/// Escapes text for a Mermaid `["…"]` label: `"` → `#quot;`, `#`, `<`,
/// `>`, `&` and `` ` `` as numeric entity codes, a line break → `<br/>`,
/// other control characters a space.
pub(crate) fn mermaid_escape(s: &str) -> String {
    escape_label(s, "<br/>", |c| match c {
        '"' => Some("#quot;"),
        '#' => Some("#35;"),
        '<' => Some("#60;"),
        '>' => Some("#62;"),
        '&' => Some("#38;"),
        '`' => Some("#96;"),
        _ => None,
    })
}

/// Renders `scope` as a Graphviz DOT digraph: one node per record (label
/// `name`, then `kind #id`; a box for data and facts, an ellipse for
/// activities, a component for models; invalid records filled light red
/// with the cause as tooltip) and an edge child → parent labelled with the
/// edge kind, drawn bottom to top.
pub fn export_dot(prov: &mut Provenance, scope: &Scope) -> Result<String> {
    let mut out = String::from(
        "digraph provenance {\n  rankdir=BT;\n  node [fontname=\"Helvetica\", fontsize=10];\n  edge [fontname=\"Helvetica\", fontsize=9];\n",
    );
    visit_graph(prov, scope, |r, cause, parents| {
        let shape = match r.kind {
            Kind::Fact | Kind::Data => "box",
            Kind::Activity => "ellipse",
            Kind::Model => "component",
        };
        let _ = write!(
            out,
            "  \"{}\" [label=\"{}\\n{} #{}\", shape={shape}",
            node_id(r.id),
            dot_escape(&r.name),
            kind_text(r),
            r.id
        );
        if let Some(c) = cause {
            let _ = write!(
                out,
                ", style=filled, fillcolor=\"#ffcccc\", tooltip=\"invalid: {}\"",
                dot_escape(c)
            );
        }
        out.push_str("];\n");
        for (p, k) in parents {
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\" [label=\"{}\"];",
                node_id(r.id),
                node_id(*p),
                k.name()
            );
        }
    })?;
    out.push_str("}\n");
    Ok(out)
}

/// Renders `scope` as a Mermaid flowchart (bottom to top): nodes `r<id>`
/// labelled `name`, then `kind #id`; invalid ones in class `invalid`
/// (filled `#f99`); an edge child → parent labelled with the edge kind.
pub fn export_mermaid(prov: &mut Provenance, scope: &Scope) -> Result<String> {
    let mut out = String::from("flowchart BT\n  classDef invalid fill:#f99\n");
    visit_graph(prov, scope, |r, cause, parents| {
        let label = mermaid_escape(&format!("{}\n{} #{}", r.name, kind_text(r), r.id));
        let _ = writeln!(
            out,
            "  {}[\"{label}\"]{}",
            node_id(r.id),
            if cause.is_some() { ":::invalid" } else { "" }
        );
        for (p, k) in parents {
            let _ = writeln!(out, "  {} -->|{}| {}", node_id(r.id), k.name(), node_id(*p));
        }
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interchange::testkit::*;

    #[test]
    fn dot_and_mermaid_show_every_node_and_edge() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = store(dir.path(), "a.sqlite");
        let g = build(&mut a);
        let odd = a
            .add(Record::new(Kind::Data, "back\\slash #1 <b> & `x`\r\nend"))
            .unwrap();
        let edges: Vec<Edge> = {
            let mut ids: Vec<RecordId> = Vec::new();
            let mut after = RecordId::MIN;
            loop {
                let page = a.backend().ids_after(after, 100).unwrap();
                let Some(&l) = page.last() else { break };
                after = l;
                ids.extend(page);
            }
            a.backend().parents(&ids).unwrap()
        };
        assert_eq!(edges.len(), 8);
        let all = [
            g.fact, g.d1, g.d2, g.act, g.out, g.model, g.m2, g.pred, g.lone, odd,
        ];

        let dot = export_dot(&mut a, &Scope::All).unwrap();
        assert!(
            dot.starts_with("digraph provenance {\n  rankdir=BT;\n"),
            "{dot}"
        );
        assert!(dot.trim_end().ends_with('}'));
        for id in all {
            assert_eq!(
                dot.matches(&format!("  \"r{id}\" [label=")).count(),
                1,
                "node {id} in {dot}"
            );
        }
        for e in &edges {
            let line = format!(
                "  \"r{}\" -> \"r{}\" [label=\"{}\"];",
                e.child,
                e.parent,
                e.kind.name()
            );
            assert!(dot.contains(&line), "{line} in {dot}");
        }
        assert_eq!(dot.matches(" -> ").count(), 8);
        assert!(dot.contains(&format!(
            r#""r{}" [label="calibration \"v2\"\nsecond line\nfact #{}", shape=box];"#,
            g.fact, g.fact
        )));
        assert!(
            dot.contains(r#"label="back\\slash #1 <b> & `x`\nend\ndata #"#),
            "{dot}"
        );
        assert!(dot.contains(&format!(
            r##""r{}" [label="reconstruct\nactivity #{}", shape=ellipse, style=filled, fillcolor="#ffcccc", tooltip="invalid: detector miscalibrated"];"##,
            g.act, g.act
        )));
        assert!(dot.contains(&format!(
            r#""r{}" [label="surrogate\nmodel v2 #{}", shape=component"#,
            g.m2, g.m2
        )));
        assert_eq!(dot.matches("fillcolor").count(), 5);

        let mm = export_mermaid(&mut a, &Scope::All).unwrap();
        assert!(mm.starts_with("flowchart BT\n"));
        assert!(mm.contains("classDef invalid fill:#f99"));
        for id in all {
            assert_eq!(
                mm.matches(&format!("  r{id}[\"")).count(),
                1,
                "node {id} in {mm}"
            );
        }
        for e in &edges {
            let line = format!("  r{} -->|{}| r{}\n", e.child, e.kind.name(), e.parent);
            assert!(mm.contains(&line), "{line} in {mm}");
        }
        assert!(mm.contains(&format!(
            "  r{}[\"calibration #quot;v2#quot;<br/>second line<br/>fact #35;{}\"]\n",
            g.fact, g.fact
        )));
        assert!(
            mm.contains("[\"back\\slash #35;1 #60;b#62; #38; #96;x#96;<br/>end<br/>data #35;"),
            "{mm}"
        );
        assert!(mm.contains(&format!(
            "  r{}[\"reconstruct<br/>activity #35;{}\"]:::invalid\n",
            g.act, g.act
        )));
        assert_eq!(mm.matches(":::invalid").count(), 5);

        let around = export_dot(
            &mut a,
            &Scope::Around {
                root: g.pred,
                depth: Some(1),
            },
        )
        .unwrap();
        assert_eq!(around.matches("[label=\"").count(), 3, "{around}"); // 2 nodes, 1 edge
    }
}
