//! A [`GraphView`] as a Mermaid flowchart, to paste into a pull request or an issue
//! (GitHub renders ```` ```mermaid ```` blocks). Edges the run took are thick, the others
//! dotted; nodes are coloured by how far the run got; the fan-out's tasks form a
//! subgraph with their dependencies.

use super::view::{GraphView, NodeKind, NodeState};
use crate::engine::TaskStatus;
use std::fmt::Write;

/// The Mermaid source of `graph` (no code fence).
pub fn to_mermaid(graph: &GraphView) -> String {
    let mut out = String::from("flowchart TD\n");
    let _ = writeln!(out, "  %% baton run {} \"{}\" ({}, {})", graph.run_id, one_line(&graph.title), graph.template, graph.status.as_str());
    let id = |node: &str| graph.nodes.iter().position(|n| n.id == node).map(|i| format!("n{i}"));
    for (i, node) in graph.nodes.iter().enumerate() {
        let mut label = text(&node.label);
        if let Some(role) = &node.role {
            let visits = match (node.visits, node.max_visits) {
                (v, Some(max)) => format!(" · visits {v}/{max}"),
                (0, None) => String::new(),
                (v, None) => format!(" · visits {v}"),
            };
            let _ = write!(label, "<br/>{}{visits}", text(role));
        }
        let (open, close) = match node.kind {
            NodeKind::Step => ("[\"", "\"]"),
            NodeKind::Done | NodeKind::Failed => ("([\"", "\"])"),
            NodeKind::FanOut => ("{{\"", "\"}}"),
        };
        let _ = writeln!(out, "  n{i}{open}{label}{close}");
    }
    for edge in &graph.edges {
        let (Some(from), Some(to)) = (id(&edge.from), id(&edge.to)) else { continue };
        let label = if edge.taken > 1 { format!("{} ×{}", edge.label, edge.taken) } else { edge.label.clone() };
        let arrow = if edge.taken > 0 { "==>" } else { "-.->" };
        let _ = writeln!(out, "  {from} {arrow}|\"{}\"| {to}", text(&label));
    }
    if let Some(tasks) = graph.tasks.as_ref().filter(|t| !t.tasks.is_empty()) {
        let _ = writeln!(out, "  subgraph tasks[\"tasks\"]");
        let _ = writeln!(out, "    direction TB");
        for (i, task) in tasks.tasks.iter().enumerate() {
            let mut label = format!("{}<br/>{}<br/>{}", text(&task.id), text(&task.title), task.status.as_str());
            if let Some(step) = &task.step {
                let _ = write!(label, " · {}", text(step));
            }
            if let Some(holder) = &task.holder {
                let _ = write!(label, "<br/>lease: {}", text(holder));
            }
            let _ = writeln!(out, "    t{i}[\"{label}\"]");
        }
        for (i, task) in tasks.tasks.iter().enumerate() {
            for dep in &task.depends_on {
                if let Some(d) = tasks.tasks.iter().position(|t| &t.id == dep) {
                    let _ = writeln!(out, "    t{d} --> t{i}");
                }
            }
        }
        let _ = writeln!(out, "  end");
        if let Some(fan_out) = id(&tasks.fan_out_node) {
            let _ = writeln!(out, "  {fan_out} -.- tasks");
        }
    }
    out.push_str(concat!(
        "  classDef current fill:#dbeafe,stroke:#1d4ed8,stroke-width:3px;\n",
        "  classDef visited fill:#dcfce7,stroke:#15803d;\n",
        "  classDef pending fill:#f8fafc,stroke:#94a3b8,color:#64748b;\n",
        "  classDef failed fill:#fee2e2,stroke:#b91c1c,stroke-width:3px;\n",
        "  classDef waiting fill:#fef3c7,stroke:#b45309;\n",
    ));
    let mut classes: Vec<(&str, Vec<String>)> = Vec::new();
    let mut add = |class: &'static str, node: String| match classes.iter_mut().find(|(c, _)| *c == class) {
        Some((_, nodes)) => nodes.push(node),
        None => classes.push((class, vec![node])),
    };
    for (i, node) in graph.nodes.iter().enumerate() {
        let class = match (node.kind, node.state) {
            (NodeKind::Failed, NodeState::Current) => "failed",
            (_, NodeState::Current) => "current",
            (_, NodeState::Visited) => "visited",
            (_, NodeState::Pending) => "pending",
        };
        add(class, format!("n{i}"));
    }
    for (i, task) in graph.tasks.iter().flat_map(|t| &t.tasks).enumerate() {
        let class = match task.status {
            TaskStatus::Claimed => "current",
            TaskStatus::Done => "visited",
            TaskStatus::AwaitingHuman => "waiting",
            TaskStatus::Failed => "failed",
            TaskStatus::Ready | TaskStatus::Waiting | TaskStatus::Skipped => "pending",
        };
        add(class, format!("t{i}"));
    }
    for (class, nodes) in classes {
        let _ = writeln!(out, "  class {} {class};", nodes.join(","));
    }
    out
}

/// Text safe inside a quoted Mermaid label: quotes and markup become entity codes,
/// line breaks become spaces.
fn text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '&' => out.push_str("#amp;"),
            '#' => out.push_str("#35;"),
            '|' => out.push_str("#124;"),
            '\n' | '\r' | '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A title for a Mermaid comment: one line.
fn one_line(value: &str) -> String {
    value.lines().next().unwrap_or_default().replace('"', "'")
}
