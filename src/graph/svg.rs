//! A [`GraphView`] drawn as a self-contained SVG: the workflow laid out in layers (start
//! on top, loops bulging out on the right), the run's path in strong colours, and the
//! fan-out's tasks as a dependency graph below it. Colours are presentation attributes,
//! so the file renders the same on the web page (whose CSP forbids inline styles), in a
//! browser tab, or pasted into a document.

use super::layout::{BULGE, Layout, Point, Route, layout};
use super::view::{GraphEdge, GraphNode, GraphView, NodeKind, NodeState, TaskGraph, TaskNode};
use crate::engine::{RunStatus, TaskStatus};
use crate::text::xml;
use std::fmt::Write;

/// Width of one character of the 12px monospace font, rounded up.
const CHAR_W: f64 = 7.4;
const LINE_H: f64 = 15.0;
const PAD_X: f64 = 12.0;
const PAD_Y: f64 = 8.0;
/// Longest task title shown in a task's box (the tooltip has all of it).
const TASK_TITLE_CHARS: usize = 28;

/// Fill, stroke, stroke width, text colour.
struct Paint(&'static str, &'static str, f64, &'static str);

const CURRENT: Paint = Paint("#dbeafe", "#1d4ed8", 3.0, "#0f172a");
const VISITED: Paint = Paint("#dcfce7", "#15803d", 1.5, "#0f172a");
const PENDING: Paint = Paint("#f8fafc", "#94a3b8", 1.0, "#64748b");
const DONE_REACHED: Paint = Paint("#bbf7d0", "#15803d", 3.0, "#14532d");
const FAILED_REACHED: Paint = Paint("#fee2e2", "#b91c1c", 3.0, "#7f1d1d");
const WAITING: Paint = Paint("#fef3c7", "#b45309", 2.0, "#78350f");
const TAKEN: (&str, f64) = ("#334155", 2.2);
const NOT_TAKEN: (&str, f64) = ("#cbd5e1", 1.2);

/// A box to draw: its lines of text (the first in bold) and its look.
struct Shape {
    lines: Vec<String>,
    tooltip: String,
    paint: Paint,
    pill: bool,
    dashed: bool,
    class: String,
    data: (&'static str, String),
}

impl Shape {
    fn size(&self) -> (f64, f64) {
        let chars = self.lines.iter().map(|l| l.chars().count()).max().unwrap_or(1) as f64;
        (chars * CHAR_W + 2.0 * PAD_X, self.lines.len() as f64 * LINE_H + 2.0 * PAD_Y)
    }
}

/// The whole picture as an SVG document.
pub fn to_svg(graph: &GraphView) -> String {
    let order = node_order(graph);
    let shapes: Vec<Shape> = order.iter().map(|&i| node_shape(graph, &graph.nodes[i])).collect();
    let index = |id: &str| order.iter().position(|&i| graph.nodes[i].id == id);
    let groups = parallel_groups(&graph.edges);
    let links: Vec<(usize, usize)> = groups.iter().filter_map(|g| Some((index(&g.from)?, index(&g.to)?))).collect();
    let drawn: Vec<&EdgeGroup> = groups.iter().filter(|g| index(&g.from).is_some() && index(&g.to).is_some()).collect();
    let main = layout(&shapes.iter().map(Shape::size).collect::<Vec<_>>(), &links);

    let tasks = graph.tasks.as_ref().filter(|t| !t.tasks.is_empty());
    let task_part = tasks.map(task_picture);
    let header = tasks.map(|t| {
        let joined = t.tasks.iter().filter(|t| t.status.has_joined()).count();
        format!("Tasks: {joined} of {} joined{} (arrows: needed by)", t.tasks.len(), if t.joined { ", fan-out finished" } else { "" })
    });
    let header_width = header.as_ref().map_or(0.0, |h| h.chars().count() as f64 * CHAR_W + 32.0);
    let tasks_top = main.height + 34.0;
    let height = task_part.as_ref().map_or(main.height, |(_, l, _)| tasks_top + l.height);

    // The picture's body first: edge labels may reach past the layout's width (a loop's
    // label sits on its bulge), and the canvas must hold them whole.
    let mut body = String::new();
    let mut right = draw_edges(&mut body, &main, &drawn, 0.0);
    draw_shapes(&mut body, &main, &shapes, 0.0);
    let task_width = task_part.as_ref().map_or(0.0, |(_, l, _)| l.width);
    if let (Some((task_shapes, task_layout, deps)), Some(header)) = (task_part, header) {
        let _ = write!(body, r##"<text x="16" y="{:.1}" font-weight="bold" fill="#334155">{}</text>"##, tasks_top - 10.0, xml(&header));
        let dep_groups: Vec<EdgeGroup> = deps.iter().map(|_| EdgeGroup::dependency()).collect();
        right = right.max(draw_edges(&mut body, &task_layout, &dep_groups.iter().collect::<Vec<_>>(), tasks_top));
        draw_shapes(&mut body, &task_layout, &task_shapes, tasks_top);
    }
    let width = main.width.max(task_width).max(header_width).max(right + 8.0).max(260.0);

    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="baton-graph" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="ui-monospace, SFMono-Regular, Menlo, Consolas, monospace" font-size="12" role="img" aria-label="{label}">"##,
        w = width,
        h = height,
        label = xml(&format!("workflow of run {} ({})", graph.run_id, graph.status.as_str())),
    );
    let _ = write!(
        svg,
        "<title>{}</title>",
        xml(&format!("baton run {}: {} [{}] {}", graph.run_id, graph.title, graph.template, graph.status.as_str()))
    );
    svg.push_str(concat!(
        r##"<defs><marker id="baton-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" markerHeight="9" markerUnits="userSpaceOnUse" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#334155"/></marker>"##,
        r##"<marker id="baton-arrow-faint" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" markerHeight="9" markerUnits="userSpaceOnUse" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#cbd5e1"/></marker></defs>"##,
    ));
    svg.push_str(r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    svg.push_str(&body);
    svg.push_str("</svg>");
    svg
}

/// Node indexes with the start step first (the layout puts node 0 on top).
fn node_order(graph: &GraphView) -> Vec<usize> {
    let start = graph.nodes.iter().position(|n| n.id == graph.start).unwrap_or(0);
    std::iter::once(start).chain((0..graph.nodes.len()).filter(|&i| i != start)).collect()
}

/// Edges between the same two nodes, drawn as one with their labels joined.
struct EdgeGroup {
    from: String,
    to: String,
    label: String,
    taken: u32,
}

impl EdgeGroup {
    fn dependency() -> EdgeGroup {
        EdgeGroup { from: String::new(), to: String::new(), label: String::new(), taken: 1 }
    }
}

fn parallel_groups(edges: &[GraphEdge]) -> Vec<EdgeGroup> {
    let mut groups: Vec<EdgeGroup> = Vec::new();
    for edge in edges {
        let text = if edge.taken > 1 { format!("{} ×{}", edge.label, edge.taken) } else { edge.label.clone() };
        match groups.iter_mut().find(|g| g.from == edge.from && g.to == edge.to) {
            Some(group) => {
                group.label.push_str(" / ");
                group.label.push_str(&text);
                group.taken += edge.taken;
            }
            None => groups.push(EdgeGroup { from: edge.from.clone(), to: edge.to.clone(), label: text, taken: edge.taken }),
        }
    }
    groups
}

fn node_shape(graph: &GraphView, node: &GraphNode) -> Shape {
    // The step a person must answer for looks like the tasks that wait for one, not like
    // a step an agent is working on.
    let asking = node.state == NodeState::Current && graph.status == RunStatus::AwaitingHuman;
    let paint = match (node.kind, node.state) {
        (NodeKind::Done, NodeState::Current) => DONE_REACHED,
        (NodeKind::Failed, NodeState::Current) => FAILED_REACHED,
        (_, NodeState::Current) if asking => WAITING,
        (_, NodeState::Current) => CURRENT,
        (_, NodeState::Visited) => VISITED,
        (_, NodeState::Pending) => PENDING,
    };
    let mut lines = vec![node.label.clone()];
    match node.kind {
        NodeKind::Step => {
            let role = node.role.clone().unwrap_or_default();
            lines.push(match (node.visits, node.max_visits) {
                (v, Some(max)) => format!("{role} · visits {v}/{max}"),
                (0, None) => role,
                (v, None) => format!("{role} · visits {v}"),
            });
        }
        NodeKind::FanOut => {
            let tasks = graph.tasks.as_ref().filter(|t| t.fan_out_node == node.id);
            lines.push(match tasks {
                Some(t) => format!("{} tasks, {} joined", t.tasks.len(), t.tasks.iter().filter(|t| t.status.has_joined()).count()),
                None => "parallel tasks".to_string(),
            });
        }
        NodeKind::Done | NodeKind::Failed => {}
    }
    let state = match node.state {
        NodeState::Current => "current",
        NodeState::Visited => "visited",
        NodeState::Pending => "pending",
    };
    let kind = match node.kind {
        NodeKind::Step => "step",
        NodeKind::Done => "done",
        NodeKind::Failed => "failed",
        NodeKind::FanOut => "fan-out",
    };
    if asking {
        lines.push("waits for you".to_string());
    }
    Shape {
        tooltip: format!("{} ({state})", lines.join(", ")),
        lines,
        paint,
        pill: matches!(node.kind, NodeKind::Done | NodeKind::Failed),
        dashed: node.kind == NodeKind::FanOut,
        class: format!("node {kind} {state}{}", if asking { " asking" } else { "" }),
        data: ("data-node", node.id.clone()),
    }
}

/// The tasks' shapes, their layout and their dependency links.
fn task_picture(tasks: &TaskGraph) -> (Vec<Shape>, Layout, Vec<(usize, usize)>) {
    let shapes: Vec<Shape> = tasks.tasks.iter().map(task_shape).collect();
    let index = |id: &str| tasks.tasks.iter().position(|t| t.id == id);
    let deps: Vec<(usize, usize)> =
        tasks.tasks.iter().enumerate().flat_map(|(i, t)| t.depends_on.iter().filter_map(move |d| Some((index(d)?, i)))).collect();
    let layout = layout(&shapes.iter().map(Shape::size).collect::<Vec<_>>(), &deps);
    (shapes, layout, deps)
}

fn task_shape(task: &TaskNode) -> Shape {
    let paint = match task.status {
        TaskStatus::Claimed => CURRENT,
        TaskStatus::Done => VISITED,
        TaskStatus::AwaitingHuman => WAITING,
        TaskStatus::Failed => FAILED_REACHED,
        TaskStatus::Ready => Paint("#ffffff", "#334155", 1.5, "#0f172a"),
        TaskStatus::Waiting | TaskStatus::Skipped => PENDING,
    };
    let title = if task.title.chars().count() > TASK_TITLE_CHARS {
        format!("{}…", task.title.chars().take(TASK_TITLE_CHARS - 1).collect::<String>())
    } else {
        task.title.clone()
    };
    let mut lines = vec![task.id.clone(), title];
    // Words for a person: `awaiting_human` is what the API says, "waits for you" what it means.
    let status = match task.status {
        TaskStatus::AwaitingHuman => "waits for you",
        TaskStatus::Waiting => "waiting",
        status => status.as_str(),
    };
    lines.push(match &task.step {
        Some(step) => format!("{status} · {step}"),
        None => status.to_string(),
    });
    if let Some(holder) = &task.holder {
        lines.push(format!("lease: {holder}"));
    }
    let mut tooltip = format!("{}: {} ({})", task.id, task.title, task.status.as_str());
    if let (Some(holder), Some(until)) = (&task.holder, task.lease_expires_at) {
        let _ = write!(tooltip, ", leased by {holder} until {until}");
    }
    Shape {
        lines,
        tooltip,
        paint,
        pill: false,
        dashed: task.status == TaskStatus::Skipped,
        class: format!("task {}", task.status.as_str()),
        data: ("data-task", task.id.clone()),
    }
}

fn draw_shapes(svg: &mut String, layout: &Layout, shapes: &[Shape], dy: f64) {
    for (shape, c) in shapes.iter().zip(&layout.centers) {
        let (w, h) = shape.size();
        let (x, y) = (c.x - w / 2.0, c.y + dy - h / 2.0);
        let Paint(fill, stroke, stroke_width, text) = shape.paint;
        let radius = if shape.pill { h / 2.0 } else { 6.0 };
        let dash = if shape.dashed { r#" stroke-dasharray="5 3""# } else { "" };
        let _ = write!(
            svg,
            r#"<g class="{}" {}="{}"><title>{}</title><rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" rx="{radius:.1}" fill="{fill}" stroke="{stroke}" stroke-width="{stroke_width}"{dash}/>"#,
            shape.class,
            shape.data.0,
            xml(&shape.data.1),
            xml(&shape.tooltip),
        );
        for (i, line) in shape.lines.iter().enumerate() {
            let weight = if i == 0 { r#" font-weight="bold""# } else { "" };
            let ty = y + PAD_Y + LINE_H * (i as f64 + 0.75);
            let _ = write!(svg, r#"<text x="{:.1}" y="{ty:.1}" text-anchor="middle" fill="{text}"{weight}>{}</text>"#, c.x, xml(line));
        }
        svg.push_str("</g>");
    }
}

/// Draw the edges and their labels; returns how far right the labels reach.
fn draw_edges(svg: &mut String, layout: &Layout, groups: &[&EdgeGroup], dy: f64) -> f64 {
    let mut labels = String::new();
    let mut right: f64 = 0.0;
    for (group, route) in groups.iter().zip(&layout.routes) {
        let (colour, width) = if group.taken > 0 { TAKEN } else { NOT_TAKEN };
        let marker = if group.taken > 0 { "baton-arrow" } else { "baton-arrow-faint" };
        let dash = if group.taken > 0 { "" } else { r#" stroke-dasharray="4 3""# };
        let (d, middle) = path(route, dy);
        let _ = write!(
            svg,
            r#"<path class="edge{}" d="{d}" fill="none" stroke="{colour}" stroke-width="{width}"{dash} marker-end="url(#{marker})"/>"#,
            if group.taken > 0 { " taken" } else { "" }
        );
        if !group.label.is_empty() {
            let w = group.label.chars().count() as f64 * 6.4 + 8.0;
            // A loop's label stands just right of its lane, so it hides no other lane.
            let middle = if route.back && !route.self_loop { Point { x: middle.x + w / 2.0 + 3.0, ..middle } } else { middle };
            right = right.max(middle.x + w / 2.0);
            let text = if group.taken > 0 { "#1e293b" } else { "#94a3b8" };
            let _ = write!(
                labels,
                r##"<g class="edge-label"><rect x="{:.1}" y="{:.1}" width="{w:.1}" height="15" rx="3" fill="#ffffff" fill-opacity="0.9"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="{text}">{}</text></g>"##,
                middle.x - w / 2.0,
                middle.y - 8.0,
                middle.x,
                middle.y + 3.5,
                xml(&group.label)
            );
        }
    }
    // Labels over every line, so no edge hides another's label.
    svg.push_str(&labels);
    right
}

/// The SVG path of a route and the point halfway along it (for its label). Forward edges
/// run vertically between layers; loops leave and enter sideways, bulging to the right.
fn path(route: &Route, dy: f64) -> (String, Point) {
    let p: Vec<Point> = route.points.iter().map(|p| Point { x: p.x, y: p.y + dy }).collect();
    if route.self_loop || p.len() < 2 {
        let (a, b) = (p[0], *p.last().unwrap_or(&p[0]));
        let (c1, c2) = (Point { x: a.x + BULGE, y: a.y - 18.0 }, Point { x: b.x + BULGE, y: b.y + 18.0 });
        return (cubic(a, c1, c2, b, true), bezier_mid(a, c1, c2, b));
    }
    if route.back && p.len() == 4 {
        // Out to the loop's lane, up it, and back in, with rounded corners.
        let (a, c1, c2, b) = (p[0], p[1], p[2], p[3]);
        let r = ((c1.x - a.x).min(c1.x - b.x) / 2.0).clamp(0.0, 10.0).min((c1.y - c2.y).abs() / 2.0);
        let d = format!(
            "M{:.1},{:.1} H{:.1} Q{:.1},{:.1} {:.1},{:.1} V{:.1} Q{:.1},{:.1} {:.1},{:.1} H{:.1} ",
            a.x,
            a.y,
            c1.x - r,
            c1.x,
            c1.y,
            c1.x,
            c1.y - r,
            c2.y + r,
            c2.x,
            c2.y,
            c2.x - r,
            c2.y,
            b.x
        );
        // The label beside the lane, halfway up (`draw_edges` puts it right of this point).
        return (d, Point { x: c1.x, y: (c1.y + c2.y) / 2.0 });
    }
    let mut d = String::new();
    let last = p.len() - 2;
    let mut mid = p[0];
    for (i, w) in p.windows(2).enumerate() {
        let (a, b) = (w[0], w[1]);
        let half = (a.y + b.y) / 2.0;
        let c1 = if route.back && i == 0 { Point { x: a.x + BULGE, y: a.y } } else { Point { x: a.x, y: half } };
        let c2 = if route.back && i == last { Point { x: b.x + BULGE, y: b.y } } else { Point { x: b.x, y: half } };
        d.push_str(&cubic(a, c1, c2, b, i == 0));
        if i == last / 2 {
            mid = bezier_mid(a, c1, c2, b);
        }
    }
    (d, mid)
}

fn cubic(a: Point, c1: Point, c2: Point, b: Point, start: bool) -> String {
    let m = if start { format!("M{:.1},{:.1} ", a.x, a.y) } else { String::new() };
    format!("{m}C{:.1},{:.1} {:.1},{:.1} {:.1},{:.1} ", c1.x, c1.y, c2.x, c2.y, b.x, b.y)
}

fn bezier_mid(a: Point, c1: Point, c2: Point, b: Point) -> Point {
    Point { x: (a.x + 3.0 * c1.x + 3.0 * c2.x + b.x) / 8.0, y: (a.y + 3.0 * c1.y + 3.0 * c2.y + b.y) / 8.0 }
}
