//! The workflow graph: the model built from runs, its layout, Mermaid and SVG.

use super::layout::{layout, spaced};
use super::mermaid::to_mermaid;
use super::svg::to_svg;
use super::view::{GraphView, NodeKind, NodeState, fan_out_id};
use crate::engine::*;
use std::time::Duration;

use crate::engine::fixtures::{NOW, actor, new_run};

fn start(template: &str) -> (Run, Vec<Event>) {
    // A title that must be escaped wherever it is drawn.
    let new = NewRun { title: "Login <b>\"page\"</b>".into(), ..new_run("r1", builtin_template(template).unwrap()) };
    let (run, event) = Run::start(new, &actor("lead"), NOW);
    (run, vec![event])
}

fn apply(run: &mut Run, events: &mut Vec<Event>, change: Change, who: &str) -> Event {
    let event = run.apply(&change, &actor(who), NOW).unwrap_or_else(|e| panic!("{change:?}: {e}"));
    events.push(event.clone());
    event
}

fn advance(run: &mut Run, events: &mut Vec<Event>, outcome: &str) {
    apply(run, events, crate::engine::fixtures::advance(run.version, outcome, &format!("did {outcome}")), "lead");
}

/// A feature run that went around the review loop once and now waits in review again.
fn looped_feature() -> (Run, Vec<Event>) {
    let (mut run, mut events) = start("feature");
    for outcome in ["planned", "implemented", "changes_requested", "implemented"] {
        advance(&mut run, &mut events, outcome);
    }
    (run, events)
}

fn taken(graph: &GraphView, from: &str, label: &str) -> u32 {
    graph.edges.iter().find(|e| e.from == from && e.label == label).unwrap_or_else(|| panic!("no edge {from} --{label}-->")).taken
}

#[test]
fn the_graph_shows_steps_outcomes_visits_and_the_path_taken() {
    let (run, events) = looped_feature();
    let graph = GraphView::of(&run, &events);
    let ids: Vec<&str> = graph.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["design", "implement", "review", "test", "done"], "steps in template order, then the ends reached by outcomes");
    assert_eq!(graph.start, "design");
    assert!(!graph.partial_history);
    let node = |id: &str| graph.node(id).unwrap();
    assert_eq!((node("implement").visits, node("implement").max_visits), (2, Some(4)));
    assert_eq!(node("review").state, NodeState::Current);
    assert_eq!((node("design").state, node("implement").state), (NodeState::Visited, NodeState::Visited));
    assert_eq!((node("test").state, node("done").state), (NodeState::Pending, NodeState::Pending));
    assert_eq!(node("done").kind, NodeKind::Done);
    assert_eq!(taken(&graph, "design", "planned"), 1);
    assert_eq!(taken(&graph, "implement", "implemented"), 2);
    assert_eq!(taken(&graph, "review", "changes_requested"), 1);
    assert_eq!(taken(&graph, "review", "approved"), 0);
    assert_eq!(taken(&graph, "test", "failed"), 0);
}

#[test]
fn finished_runs_end_at_their_end_node() {
    let (mut run, mut events) = looped_feature();
    advance(&mut run, &mut events, "approved");
    advance(&mut run, &mut events, "passed");
    let graph = GraphView::of(&run, &events);
    assert_eq!(graph.node("done").map(|n| (n.state, n.visits)), Some((NodeState::Current, 1)));
    assert!(graph.nodes.iter().filter(|n| n.kind == NodeKind::Step).all(|n| n.state == NodeState::Visited));

    let (mut run, mut events) = start("feature");
    apply(&mut run, &mut events, Change::AskHuman { expected_version: None, question: "q".into(), options: vec![] }, "lead");
    apply(&mut run, &mut events, Change::Cancel { expected_version: None, reason: "no".into() }, "lead");
    let graph = GraphView::of(&run, &events);
    assert!(graph.nodes.iter().all(|n| n.state != NodeState::Current), "a cancelled run stands nowhere");
}

#[test]
fn a_partial_history_still_marks_each_steps_latest_outcome() {
    let (run, events) = looped_feature();
    let graph = GraphView::of(&run, &events[3..]);
    assert!(graph.partial_history);
    assert_eq!(taken(&graph, "design", "planned"), 1, "from the snapshot's outputs");
    assert_eq!(taken(&graph, "implement", "implemented"), 1, "only the event read counts");
}

#[test]
fn a_fan_out_is_a_node_and_its_tasks_a_dag_with_leases() {
    let (mut run, mut events) = start("parallel");
    let mut plan = crate::engine::fixtures::plan(&[("api", &[]), ("ui", &["api"]), ("docs", &[])]);
    for task in &mut plan.tasks {
        task.title = format!("the {} \"part\"", task.id); // escaped wherever it is drawn
    }
    apply(&mut run, &mut events, crate::engine::fixtures::planned(1, plan), "lead");
    apply(&mut run, &mut events, Change::Claim { task: Some("api".into()), lease: Duration::from_secs(60) }, "worker-1");

    let graph = GraphView::of(&run, &events);
    let fan_out = fan_out_id("design", "planned");
    assert_eq!(graph.node(&fan_out).map(|n| (n.kind, n.state)), Some((NodeKind::FanOut, NodeState::Current)));
    assert_eq!(taken(&graph, "design", "planned"), 1);
    assert_eq!(taken(&graph, &fan_out, "joined"), 0, "the tasks have not joined");
    assert!(graph.edges.iter().any(|e| e.from == fan_out && e.to == "integrate"));
    let tasks = graph.tasks.as_ref().unwrap();
    assert_eq!(tasks.fan_out_node, fan_out);
    let api = &tasks.tasks[0];
    assert_eq!((api.status, api.step.as_deref(), api.holder.as_deref()), (TaskStatus::Claimed, Some("implement"), Some("codex worker-1")));
    assert_eq!(tasks.tasks[1].depends_on, ["api"]);
    assert_eq!(tasks.tasks[1].status, TaskStatus::Waiting);

    let mermaid = to_mermaid(&graph);
    assert!(mermaid.contains("subgraph tasks"), "{mermaid}");
    assert!(mermaid.contains("t0 --> t1"), "ui depends on api: {mermaid}");
    assert!(mermaid.contains("lease: codex worker-1"), "{mermaid}");
    assert!(mermaid.contains("the api #quot;part#quot;"), "quotes in titles are escaped: {mermaid}");
    assert!(mermaid.contains("{{\"fan-out: task"), "a fan-out is a hexagon: {mermaid}");

    let svg = to_svg(&graph);
    assert_eq!(svg.matches(r#"<g class="task "#).count(), 3, "{svg}");
    assert!(svg.contains(r#"<g class="task claimed" data-task="api">"#), "{svg}");
    assert!(svg.contains("lease: codex worker-1"));
    assert!(svg.contains(r#"class="node fan-out current""#));
}

#[test]
fn mermaid_draws_taken_edges_thick_and_the_rest_dotted() {
    let (run, events) = looped_feature();
    let mermaid = to_mermaid(&GraphView::of(&run, &events));
    let lines: Vec<&str> = mermaid.lines().collect();
    assert_eq!(lines[0], "flowchart TD");
    assert!(lines.contains(&"  n0[\"design<br/>architect · visits 1\"]"), "{mermaid}");
    assert!(lines.contains(&"  n1[\"implement<br/>implementer · visits 2/4\"]"), "{mermaid}");
    assert!(lines.contains(&"  n4([\"done\"])"), "ends are stadiums: {mermaid}");
    assert!(lines.contains(&"  n0 ==>|\"planned\"| n1"), "{mermaid}");
    assert!(lines.contains(&"  n1 ==>|\"implemented ×2\"| n2"), "{mermaid}");
    assert!(lines.contains(&"  n2 ==>|\"changes_requested\"| n1"), "{mermaid}");
    assert!(lines.contains(&"  n2 -.->|\"approved\"| n3"), "{mermaid}");
    assert!(lines.contains(&"  class n2 current;"), "{mermaid}");
    assert!(lines.contains(&"  class n0,n1 visited;"), "{mermaid}");
    assert!(lines[1].contains("Login <b>'page'</b>"), "the title is only in a comment: {}", lines[1]);
}

#[test]
fn svg_is_self_contained_escaped_and_paints_the_path() {
    let (run, events) = looped_feature();
    let svg = to_svg(&GraphView::of(&run, &events));
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"baton-graph\""), "{svg}");
    assert!(svg.ends_with("</svg>"));
    assert!(!svg.contains("style="), "no inline styles (the page's CSP forbids them)");
    assert!(svg.contains("Login &lt;b&gt;&quot;page&quot;&lt;/b&gt;"), "the title is escaped");
    assert!(!svg.contains("<b>"));
    assert_eq!(svg.matches("<g class=\"node ").count(), 5);
    assert!(svg.contains(r#"<g class="node step current" data-node="review">"#), "{svg}");
    assert!(svg.contains(r#"<g class="node done pending" data-node="done">"#), "{svg}");
    assert_eq!(svg.matches("class=\"edge taken\"").count(), 3, "planned, implemented and changes_requested were taken");
    assert_eq!(svg.matches("class=\"edge\"").count(), 3, "approved, passed and failed were not");
    assert!(svg.contains(">implemented ×2<"));
    assert_eq!(svg.matches("<g").count(), svg.matches("</g>").count(), "groups are balanced");
}

/// The looped feature run's graph, its node sizes, its edges (node indexes) and its layout.
type Edges = Vec<(usize, usize)>;

fn looped_layout() -> (GraphView, Vec<(f64, f64)>, Edges, super::layout::Layout) {
    let (run, events) = looped_feature();
    let graph = GraphView::of(&run, &events);
    let sizes: Vec<(f64, f64)> = graph.nodes.iter().map(|n| (n.label.len() as f64 * 8.0 + 24.0, 40.0)).collect();
    let index = |id: &str| graph.nodes.iter().position(|n| n.id == id).unwrap();
    let edges: Vec<(usize, usize)> = graph.edges.iter().map(|e| (index(&e.from), index(&e.to))).collect();
    let l = layout(&sizes, &edges);
    (graph, sizes, edges, l)
}

#[test]
fn the_layout_keeps_nodes_apart_and_forward_edges_downwards() {
    let (graph, sizes, edges, l) = looped_layout();
    let index = |id: &str| graph.nodes.iter().position(|n| n.id == id).unwrap();
    for i in 0..sizes.len() {
        for j in i + 1..sizes.len() {
            let (a, b) = (l.centers[i], l.centers[j]);
            let apart_x = (a.x - b.x).abs() >= (sizes[i].0 + sizes[j].0) / 2.0;
            let apart_y = (a.y - b.y).abs() >= (sizes[i].1 + sizes[j].1) / 2.0;
            assert!(apart_x || apart_y, "nodes {i} and {j} overlap: {a:?} {b:?}");
        }
        assert!(l.centers[i].x - sizes[i].0 / 2.0 >= 0.0 && l.centers[i].x + sizes[i].0 / 2.0 <= l.width, "inside the picture");
    }
    for (route, &(a, b)) in l.routes.iter().zip(&edges) {
        if route.back {
            assert!(l.centers[a].y > l.centers[b].y, "a loop goes back up");
        } else {
            assert!(l.centers[a].y < l.centers[b].y, "a forward edge goes down");
        }
    }
    assert_eq!(l.routes.iter().filter(|r| r.back).count(), 2, "changes_requested and failed close the loops");
    assert!(l.centers[index("design")].y < l.centers[index("implement")].y);
    assert!(l.centers[index("test")].y < l.centers[index("done")].y);

    let looped = layout(&[(10.0, 10.0)], &[(0, 0)]);
    assert!(looped.routes[0].self_loop);
}

#[test]
fn spacing_is_least_squares_under_the_ordering_constraints() {
    assert_eq!(spaced(&[0.0, 100.0], &[10.0]), vec![0.0, 100.0], "far enough apart: unchanged");
    assert_eq!(spaced(&[50.0, 50.0], &[20.0]), vec![40.0, 60.0], "pushed apart around their mean");
    assert_eq!(spaced(&[0.0, 0.0, 0.0], &[10.0, 10.0]), vec![-10.0, 0.0, 10.0]);
    assert_eq!(spaced(&[], &[]), Vec::<f64>::new());
}

#[test]
fn loops_run_in_lanes_right_of_what_they_pass_and_never_cross() {
    let (graph, sizes, edges, l) = looped_layout();
    let index = |id: &str| graph.nodes.iter().position(|n| n.id == id).unwrap();
    let loops: Vec<(usize, &crate::graph::layout::Route)> = l.routes.iter().enumerate().filter(|(_, r)| r.back && !r.self_loop).collect();
    assert_eq!(loops.len(), 2);
    // (horizontal segments at y from x0 to x1, the vertical segment at x from y0 to y1)
    let shape = |r: &crate::graph::layout::Route| {
        let p = &r.points;
        assert_eq!(p.len(), 4, "out, up the lane, in: {p:?}");
        assert_eq!(p[1].x, p[2].x, "the lane is vertical");
        assert!(p[1].y > p[2].y, "a loop goes up");
        ([(p[0].y, p[0].x, p[1].x), (p[3].y, p[3].x, p[2].x)], (p[1].x, p[2].y, p[1].y))
    };
    for &(i, route) in &loops {
        let (_, (lane, top, bottom)) = shape(route);
        for (v, c) in l.centers.iter().enumerate() {
            if c.y >= top - sizes[v].1 && c.y <= bottom + sizes[v].1 {
                assert!(lane > c.x + sizes[v].0 / 2.0, "loop {i}'s lane passes right of node {v}");
            }
        }
        assert!(lane < l.width, "inside the picture");
    }
    for &(i, a) in &loops {
        for &(j, b) in &loops {
            if i == j {
                continue;
            }
            let (across, _) = shape(a);
            let (_, (x, y0, y1)) = shape(b);
            for (y, x0, x1) in across {
                let crosses = x0 < x && x < x1 && y0 < y && y < y1;
                assert!(!crosses, "loop {i} crosses loop {j}: {:?} {:?}", a.points, b.points);
            }
        }
    }
    let lane_of = |from: &str| {
        let (_, route) = loops.iter().find(|(i, _)| edges[*i].0 == index(from)).unwrap();
        route.points[1].x
    };
    assert!(lane_of("test") > lane_of("review"), "the longer loop holds the shorter one inside");
}
