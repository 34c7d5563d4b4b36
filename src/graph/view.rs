//! A run's workflow as a graph: the template's steps as nodes, outcomes as labelled edges,
//! with what the run did painted on (visits, the edges it took, where it stands) and the
//! tasks of its fan-out as a second, dependency-ordered graph.
//!
//! One model feeds every picture of a run: Mermaid for pull requests
//! ([`super::mermaid`]), SVG for the web page and the terminal ([`super::svg`]),
//! and JSON for anything else. It is built from the snapshot plus whatever history the
//! caller read, so drawing never needs more than one bounded read.

use crate::engine::TaskStatus;
use crate::engine::{DONE, FAILED, Target};
use crate::engine::{Event, EventKind};
use crate::engine::{Run, RunStatus};
use crate::time::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a node stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// A step of the template, played by a role.
    Step,
    /// The run completes here.
    Done,
    /// The run fails here.
    Failed,
    /// The plan's tasks run in parallel here, then the run goes on at the join target.
    FanOut,
}

/// How far the run got with a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// The run is here now (or ended here).
    Current,
    /// The run passed through it.
    Visited,
    /// Not reached (yet).
    Pending,
}

/// A node of the workflow graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GraphNode {
    /// Unique in the graph: the step name, `done`, `failed`, or `fan_out:<step>:<outcome>`.
    pub id: String,
    pub label: String,
    pub kind: NodeKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// How often the run entered it (a human's `continue` at a loop limit restarts the count).
    pub visits: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_visits: Option<u32>,
    pub state: NodeState,
}

/// An outcome of a step, leading to another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GraphEdge {
    pub from: String,
    pub to: String,
    /// The outcome that takes this edge (`joined` for a fan-out's way on).
    pub label: String,
    /// How often the run took it, as far as the history read tells.
    pub taken: u32,
}

/// One task of the fan-out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskNode {
    pub id: String,
    pub title: String,
    pub status: TaskStatus,
    /// The pipeline step it is at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Who holds its lease (while claimed), and until when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<Timestamp>,
    pub depends_on: Vec<String>,
}

/// The tasks of the run's latest fan-out, as a dependency graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskGraph {
    /// The node of the workflow graph the tasks belong to.
    pub fan_out_node: String,
    pub joined: bool,
    pub tasks: Vec<TaskNode>,
}

/// A run's workflow graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GraphView {
    pub run_id: String,
    pub title: String,
    pub template: String,
    pub status: RunStatus,
    pub version: u64,
    /// The node runs start at.
    pub start: String,
    /// Steps in template order, then the ends and fan-outs.
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<TaskGraph>,
    /// Set when the history read did not reach the run's first event: counts on edges
    /// cover the newest events only (each step's latest outcome is always marked taken).
    pub partial_history: bool,
}

/// The id of the node for the fan-out an outcome of `step` leads to.
pub fn fan_out_id(step: &str, outcome: &str) -> String {
    format!("fan_out:{step}:{outcome}")
}

impl GraphView {
    /// The graph of `run`, with edge counts from `events` (any window of its history,
    /// oldest first; the newest ones if not all).
    pub fn of(run: &Run, events: &[Event]) -> GraphView {
        let partial_history = events.first().is_none_or(|e| e.seq > 1) && run.version > 0;
        let mut graph = GraphView {
            run_id: run.id.clone(),
            title: run.title.clone(),
            template: run.template.name.clone(),
            status: run.status,
            version: run.version,
            start: run.template.start_step().to_string(),
            nodes: Vec::new(),
            edges: Vec::new(),
            tasks: None,
            partial_history,
        };
        graph.add_template(run);
        if run.status == RunStatus::Failed && graph.node(FAILED).is_none() {
            // Failed without an outcome leading there (a human stopped a loop).
            graph.nodes.push(end_or_fan_out(FAILED, FAILED, NodeKind::Failed));
        }
        graph.count_taken(run, events);
        graph.mark_states(run);
        graph.tasks = task_graph(run);
        graph
    }

    pub fn node(&self, id: &str) -> Option<&GraphNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Nodes and edges of the template: every step, its outcomes, and the ends and
    /// fan-outs they lead to (an end only when some outcome leads there).
    fn add_template(&mut self, run: &Run) {
        let mut extra = Vec::new();
        for step in &run.template.steps {
            self.nodes.push(GraphNode {
                id: step.name.clone(),
                label: step.name.clone(),
                kind: NodeKind::Step,
                role: Some(step.role.clone()),
                visits: run.visits.get(&step.name).copied().unwrap_or(0),
                max_visits: step.max_visits,
                state: NodeState::Pending,
            });
            for (outcome, target) in &step.outcomes {
                let to = match target {
                    Target::FanOut(fan_out) => {
                        let id = fan_out_id(&step.name, outcome);
                        extra.push(end_or_fan_out(&id, &format!("fan-out: {}", fan_out.fan_out), NodeKind::FanOut));
                        self.edges.push(edge(&id, fan_out.join.as_str(), "joined"));
                        push_end(&mut extra, fan_out.join.as_str());
                        id
                    }
                    other => {
                        push_end(&mut extra, other.as_str());
                        other.as_str().to_string()
                    }
                };
                self.edges.push(edge(&step.name, &to, outcome));
            }
        }
        // The outcome edges first, in template order, then the fan-outs' ways on.
        self.edges.sort_by_key(|e| e.label == "joined" && e.from.starts_with("fan_out:"));
        for node in extra {
            if self.node(&node.id).is_none() {
                self.nodes.push(node);
            }
        }
    }

    /// Count the edges the history shows taken; each step's latest outcome in the
    /// snapshot counts at least once, so a partial history still shows the path.
    fn count_taken(&mut self, run: &Run, events: &[Event]) {
        let mut joins_started: BTreeMap<String, u32> = BTreeMap::new();
        for event in events {
            if let EventKind::Advanced { report, .. } = &event.kind {
                if let Target::FanOut(_) = report.next {
                    *joins_started.entry(fan_out_id(&report.step, &report.outcome)).or_default() += 1;
                }
                self.bump(&report.step, &report.outcome);
            }
        }
        for output in run.outputs.values() {
            if let Some(edge) = self.edges.iter_mut().find(|e| e.from == output.step && e.label == output.outcome) {
                edge.taken = edge.taken.max(1);
            }
        }
        // A fan-out's way on was taken by each of its fan-outs that joined.
        let latest = fan_out_node(run);
        let open = latest.clone().filter(|_| run.fanout.as_ref().is_some_and(|f| !f.joined));
        for edge in self.edges.iter_mut().filter(|e| e.from.starts_with("fan_out:")) {
            let started = joins_started.get(&edge.from).copied().unwrap_or(0);
            edge.taken = started.saturating_sub(u32::from(open.as_ref() == Some(&edge.from)));
        }
        if let Some(node) = &latest {
            let joined = run.fanout.as_ref().is_some_and(|f| f.joined);
            for edge in self.edges.iter_mut().filter(|e| &e.to == node || (joined && &e.from == node)) {
                edge.taken = edge.taken.max(1);
            }
        }
        // Ends and fan-outs have no visit counter of their own: they were entered as
        // often as the edges into them were taken.
        for i in 0..self.nodes.len() {
            if self.nodes[i].kind != NodeKind::Step {
                let id = &self.nodes[i].id;
                let entered = self.edges.iter().filter(|e| &e.to == id).map(|e| e.taken).sum();
                self.nodes[i].visits = entered;
            }
        }
        if let Some(end) = current_node(run).filter(|id| id == DONE || id == FAILED) {
            self.nodes.iter_mut().filter(|n| n.id == end).for_each(|n| n.visits = n.visits.max(1));
        }
    }

    fn bump(&mut self, step: &str, outcome: &str) {
        if let Some(edge) = self.edges.iter_mut().find(|e| e.from == step && e.label == outcome) {
            edge.taken += 1;
        }
    }

    /// Where the run is, and what it passed through.
    fn mark_states(&mut self, run: &Run) {
        let current = current_node(run);
        let reached: Vec<String> = self.edges.iter().filter(|e| e.taken > 0).flat_map(|e| [e.from.clone(), e.to.clone()]).collect();
        for node in &mut self.nodes {
            node.state = if current.as_deref() == Some(node.id.as_str()) {
                NodeState::Current
            } else if node.visits > 0 || reached.contains(&node.id) {
                NodeState::Visited
            } else {
                NodeState::Pending
            };
        }
    }
}

/// The node the run stands at: its step, its open fan-out, or the end it reached.
fn current_node(run: &Run) -> Option<String> {
    if let Some(step) = &run.current_step {
        return Some(step.clone());
    }
    match run.status {
        RunStatus::Completed => Some(DONE.to_string()),
        RunStatus::Failed => Some(FAILED.to_string()),
        RunStatus::Cancelled => None,
        RunStatus::Active | RunStatus::AwaitingHuman => run.fanout.as_ref().filter(|f| !f.joined).and_then(|_| fan_out_node(run)),
    }
}

/// The node of the run's latest fan-out: the outcome of its step that fans out and joins
/// where it does.
fn fan_out_node(run: &Run) -> Option<String> {
    let fanout = run.fanout.as_ref()?;
    let step = run.template.step(&fanout.from_step)?;
    let fans_out = |t: &Target| matches!(t, Target::FanOut(f) if f.join.target() == fanout.join);
    let (outcome, _) = step.outcomes.iter().find(|(_, t)| fans_out(t))?;
    Some(fan_out_id(&step.name, outcome))
}

fn task_graph(run: &Run) -> Option<TaskGraph> {
    let fanout = run.fanout.as_ref()?;
    let fan_out_node = fan_out_node(run)?;
    let tasks = fanout
        .tasks
        .iter()
        .map(|t| {
            let lease = t.lease.as_ref().filter(|_| t.status == TaskStatus::Claimed);
            TaskNode {
                id: t.id.clone(),
                title: t.title.clone(),
                status: t.status,
                step: t.step.clone(),
                holder: lease.map(|l| l.holder.label()),
                lease_expires_at: lease.map(|l| l.expires_at),
                depends_on: t.depends_on.clone(),
            }
        })
        .collect();
    Some(TaskGraph { fan_out_node, joined: fanout.joined, tasks })
}

fn edge(from: &str, to: &str, label: &str) -> GraphEdge {
    GraphEdge { from: from.to_string(), to: to.to_string(), label: label.to_string(), taken: 0 }
}

fn end_or_fan_out(id: &str, label: &str, kind: NodeKind) -> GraphNode {
    GraphNode { id: id.to_string(), label: label.to_string(), kind, role: None, visits: 0, max_visits: None, state: NodeState::Pending }
}

/// Note an end node (`done` or `failed`) that `target` names, if it is one.
fn push_end(extra: &mut Vec<GraphNode>, target: &str) {
    let kind = match target {
        DONE => NodeKind::Done,
        FAILED => NodeKind::Failed,
        _ => return,
    };
    if !extra.iter().any(|n| n.id == target) {
        extra.push(end_or_fan_out(target, target, kind));
    }
}
