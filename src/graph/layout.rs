//! Layered layout of a directed graph (the Sugiyama scheme, kept small): break cycles,
//! put nodes on layers by longest path, route long edges through dummy points, order
//! each layer to reduce crossings, then place nodes as close to their neighbours as the
//! order allows. Workflow graphs have at most a few hundred nodes, so plain quadratic
//! steps are fine; the result is deterministic for the same input.

/// A point in drawing coordinates (y grows downwards).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

/// How one edge is drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// From the source's border to the target's border, through any bends.
    pub points: Vec<Point>,
    /// The edge points against the layering (it closes a loop): drawn on the right side,
    /// in a lane of its own: `points` are the source's right side, the two corners of the
    /// lane, and the target's right side.
    pub back: bool,
    /// The edge leads from a node to itself.
    pub self_loop: bool,
}

/// Where everything goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// The centre of each node.
    pub centers: Vec<Point>,
    /// One route per input edge, in input order.
    pub routes: Vec<Route>,
    pub width: f64,
    pub height: f64,
}

/// Horizontal gap between neighbours on a layer.
const H_GAP: f64 = 36.0;
/// Vertical gap between layers (room for edge labels).
const V_GAP: f64 = 58.0;
/// Width reserved for an edge passing through a layer.
const DUMMY_WIDTH: f64 = 16.0;
/// Gap beside a passing edge: edges need less room than boxes.
const DUMMY_GAP: f64 = 10.0;
/// How far loops bulge out to the right of their nodes.
pub const BULGE: f64 = 46.0;
/// Distance between the lanes of loops drawn side by side.
const LANE_GAP: f64 = 22.0;
const MARGIN: f64 = 16.0;
/// Ordering sweeps (each one down and one up).
const SWEEPS: usize = 8;

/// Lay out nodes of the given `(width, height)` joined by `edges` (`from`, `to`); node 0
/// is placed first (on top, leftmost) when it starts the graph.
pub fn layout(sizes: &[(f64, f64)], edges: &[(usize, usize)]) -> Layout {
    let n = sizes.len();
    let edges: Vec<(usize, usize)> = edges.iter().copied().filter(|&(a, b)| a < n && b < n).collect();
    let reversed = back_edges(n, &edges);
    let dag: Vec<(usize, usize)> = edges.iter().zip(&reversed).map(|(&(a, b), &r)| if r { (b, a) } else { (a, b) }).collect();
    let layer = longest_path_layers(n, &dag);

    // The layered graph: real nodes, then one dummy per layer an edge passes through.
    // Forward edges from one node share their dummies layer by layer (they leave as one
    // bundle and split just above their targets), so a node needed by many below a layer
    // it skips widens that layer by one passing edge, not one per target, and the bundle
    // crosses the edges between it and its targets once instead of once per edge.
    let mut layer_of = layer.clone();
    let mut width_of: Vec<f64> = sizes.iter().map(|s| s.0).collect();
    let mut chains: Vec<Vec<usize>> = Vec::with_capacity(edges.len());
    let mut links: Vec<(usize, usize)> = Vec::new();
    let mut shared: std::collections::HashMap<(usize, usize), usize> = std::collections::HashMap::new();
    for (&(a, b), &back) in dag.iter().zip(&reversed) {
        if a == b {
            chains.push(vec![a]);
            continue;
        }
        let mut chain = vec![a];
        if back {
            // Loops run in lanes right of everything they pass (see `lanes`): they take no
            // room inside the layers and do not pull the order of the nodes.
            chain.push(b);
            chains.push(chain);
            continue;
        }
        for l in layer[a] + 1..layer[b] {
            let fresh = |layer_of: &mut Vec<usize>, width_of: &mut Vec<f64>| {
                layer_of.push(l);
                width_of.push(DUMMY_WIDTH);
                layer_of.len() - 1
            };
            let dummy = *shared.entry((a, l)).or_insert_with(|| fresh(&mut layer_of, &mut width_of));
            chain.push(dummy);
        }
        chain.push(b);
        for w in chain.windows(2) {
            if !links.contains(&(w[0], w[1])) {
                links.push((w[0], w[1]));
            }
        }
        chains.push(chain);
    }
    let layers = order_layers(&layer_of, &links);
    let x = place(&layers, &links, &width_of, n);
    let (y, height) = layer_rows(&layers, sizes, n);

    let center = |v: usize| Point { x: x[v], y: y[layer_of[v]] };
    let centers: Vec<Point> = (0..n).map(center).collect();
    let half = |v: usize| if v < n { sizes[v].1 / 2.0 } else { 0.0 };
    let mut right_edge = (0..layer_of.len()).map(|v| x[v] + width_of[v] / 2.0).fold(0.0, f64::max);
    let mut routes: Vec<Route> = edges
        .iter()
        .zip(&chains)
        .zip(&reversed)
        .map(|((&(a, b), chain), &back)| {
            if a == b {
                let c = centers[a];
                let (w, h) = sizes[a];
                let start = Point { x: c.x + w / 2.0, y: c.y - h / 4.0 };
                let end = Point { x: c.x + w / 2.0, y: c.y + h / 4.0 };
                right_edge = right_edge.max(start.x + BULGE);
                return Route { points: vec![start, end], back: true, self_loop: true };
            }
            let mut points: Vec<Point> = chain.iter().map(|&v| center(v)).collect();
            if back {
                // From `a` (below) up to `b`, leaving and entering on their right sides; the
                // lane's corners are set by `lanes`.
                let (from, to) = (centers[a], centers[b]);
                let (start, end) = (Point { x: from.x + sizes[a].0 / 2.0, y: from.y }, Point { x: to.x + sizes[b].0 / 2.0, y: to.y });
                points = vec![start, start, end, end];
            } else {
                let last = points.len() - 1;
                points[0].y += half(a);
                points[last].y -= half(b);
            }
            Route { points, back, self_loop: false }
        })
        .collect();
    let lane = lanes(&routes, &edges, &layer, &layer_of, &x, &width_of);
    spread_back_ends(&mut routes, &edges, sizes, &lane);
    for (route, lane_x) in routes.iter_mut().zip(&lane) {
        if let Some(lane_x) = *lane_x {
            route.points[1] = Point { x: lane_x, y: route.points[0].y };
            route.points[2] = Point { x: lane_x, y: route.points[3].y };
            right_edge = right_edge.max(lane_x + LANE_GAP);
        }
    }
    Layout { centers, routes, width: right_edge + MARGIN, height }
}

/// The x of each loop's lane (`None` for the other edges): right of every node and passing
/// edge on the layers the loop spans, a loop that holds another's span one lane further
/// out, so nested loops never cross and loops side by side share a lane only when their
/// spans do not meet.
fn lanes(routes: &[Route], edges: &[(usize, usize)], layer: &[usize], layer_of: &[usize], x: &[f64], width: &[f64]) -> Vec<Option<f64>> {
    let span = |i: usize| {
        let (a, b) = edges[i];
        (layer[a].min(layer[b]), layer[a].max(layer[b]))
    };
    let mut loops: Vec<usize> = (0..routes.len()).filter(|&i| routes[i].back && !routes[i].self_loop).collect();
    // Short loops first: they take the inner lanes.
    loops.sort_by_key(|&i| (span(i).1 - span(i).0, span(i).0, i));
    let mut depth: Vec<Option<usize>> = vec![None; routes.len()];
    let mut lane = vec![None; routes.len()];
    for &i in &loops {
        let (top, bottom) = span(i);
        let meets = |j: usize| span(j).0 <= bottom && top <= span(j).1;
        let d = loops.iter().filter(|&&j| meets(j)).filter_map(|&j| depth[j]).max().map_or(0, |d| d + 1);
        depth[i] = Some(d);
        let right =
            (0..layer_of.len()).filter(|&v| (top..=bottom).contains(&layer_of[v])).map(|v| x[v] + width[v] / 2.0).fold(0.0, f64::max);
        lane[i] = Some(right + BULGE / 2.0 + LANE_GAP * d as f64);
    }
    lane
}

/// Loops that leave or enter the same node would share one point on its right side:
/// spread them over the middle half of that side, so that none crosses another there.
/// Loops that leave the node (going up) are above those that enter it (coming down from
/// it, seen from below); among those that leave, outer lanes lower; among those that
/// enter, outer lanes higher.
fn spread_back_ends(routes: &mut [Route], edges: &[(usize, usize)], sizes: &[(f64, f64)], lane: &[Option<f64>]) {
    for (node, &(_, height)) in sizes.iter().enumerate() {
        // (route, whether the node is where it starts)
        let mut ends: Vec<(usize, bool)> = routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.back && !r.self_loop)
            .flat_map(|(i, _)| [(i, edges[i].0 == node), (i, edges[i].1 == node)].into_iter().enumerate())
            .filter_map(|(which, (i, here))| here.then_some((i, which == 0)))
            .collect();
        let count = ends.len();
        if count < 2 {
            continue;
        }
        let key = |&(i, starts): &(usize, bool)| {
            let x = lane[i].unwrap_or(0.0);
            if starts { (0, x) } else { (1, -x) }
        };
        ends.sort_by(|p, q| key(p).partial_cmp(&key(q)).unwrap_or(std::cmp::Ordering::Equal));
        let step = (height / 2.0) / (count as f64 - 1.0);
        for (k, (i, starts)) in ends.into_iter().enumerate() {
            let offset = -height / 4.0 + step * k as f64;
            let points = &mut routes[i].points;
            let point = if starts { points.first_mut() } else { points.last_mut() };
            if let Some(p) = point {
                p.y += offset;
            }
        }
    }
}

/// Which edges to turn around so that the rest is acyclic: those that close a cycle in a
/// depth-first search from node 0, then from each node not yet seen, in order.
fn back_edges(n: usize, edges: &[(usize, usize)]) -> Vec<bool> {
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, &(a, _)) in edges.iter().enumerate() {
        out[a].push(i);
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Fresh,
        Open,
        Closed,
    }
    let mut mark = vec![Mark::Fresh; n];
    let mut back = vec![false; edges.len()];
    for root in 0..n {
        if mark[root] != Mark::Fresh {
            continue;
        }
        mark[root] = Mark::Open;
        let mut stack = vec![(root, 0usize)];
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&edge) = out[node].get(*next) {
                *next += 1;
                let target = edges[edge].1;
                match mark[target] {
                    Mark::Open => back[edge] = true,
                    Mark::Fresh => {
                        mark[target] = Mark::Open;
                        stack.push((target, 0));
                    }
                    Mark::Closed => {}
                }
            } else {
                mark[node] = Mark::Closed;
                stack.pop();
            }
        }
    }
    back
}

/// Each node's layer: one below its lowest predecessor (self-loops ignored).
fn longest_path_layers(n: usize, dag: &[(usize, usize)]) -> Vec<usize> {
    let mut indegree = vec![0usize; n];
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(a, b) in dag.iter().filter(|(a, b)| a != b) {
        indegree[b] += 1;
        out[a].push(b);
    }
    let mut layer = vec![0usize; n];
    let mut ready: Vec<usize> = (0..n).filter(|&v| indegree[v] == 0).rev().collect();
    while let Some(v) = ready.pop() {
        for &w in &out[v] {
            layer[w] = layer[w].max(layer[v] + 1);
            indegree[w] -= 1;
            if indegree[w] == 0 {
                ready.push(w);
            }
        }
    }
    layer
}

/// The nodes of each layer, left to right: first as created, then reordered by the
/// barycentre of their neighbours on the adjacent layer, keeping the order with the
/// fewest crossings.
fn order_layers(layer_of: &[usize], links: &[(usize, usize)]) -> Vec<Vec<usize>> {
    let depth = layer_of.iter().copied().max().map_or(0, |m| m + 1);
    let mut layers: Vec<Vec<usize>> = vec![Vec::new(); depth];
    for (v, &l) in layer_of.iter().enumerate() {
        layers[l].push(v);
    }
    let mut best = layers.clone();
    let mut best_crossings = crossings(&layers, links, layer_of);
    for _ in 0..SWEEPS {
        for l in 1..depth {
            reorder(&mut layers, l, l - 1, links, true);
        }
        for l in (0..depth.saturating_sub(1)).rev() {
            reorder(&mut layers, l, l + 1, links, false);
        }
        let c = crossings(&layers, links, layer_of);
        if c < best_crossings {
            best_crossings = c;
            best = layers.clone();
        }
        if best_crossings == 0 {
            break;
        }
    }
    best
}

/// Sort layer `l` by the mean position of each node's neighbours on layer `other`.
fn reorder(layers: &mut [Vec<usize>], l: usize, other: usize, links: &[(usize, usize)], from_above: bool) {
    let position = |v: usize| layers[other].iter().position(|&u| u == v);
    let mut keyed: Vec<(f64, usize)> = layers[l]
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let neighbours: Vec<f64> = links
                .iter()
                .filter_map(|&(a, b)| {
                    if from_above && b == v {
                        Some(a)
                    } else if !from_above && a == v {
                        Some(b)
                    } else {
                        None
                    }
                })
                .filter_map(|u| position(u).map(|p| p as f64))
                .collect();
            let key = if neighbours.is_empty() { i as f64 } else { neighbours.iter().sum::<f64>() / neighbours.len() as f64 };
            (key, v)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    layers[l] = keyed.into_iter().map(|(_, v)| v).collect();
}

/// How many pairs of links between adjacent layers cross.
fn crossings(layers: &[Vec<usize>], links: &[(usize, usize)], layer_of: &[usize]) -> usize {
    let pos = |v: usize| layers[layer_of[v]].iter().position(|&u| u == v).unwrap_or(0);
    let spans: Vec<(usize, usize, usize)> = links.iter().map(|&(a, b)| (layer_of[a], pos(a), pos(b))).collect();
    let mut count = 0;
    for (i, &(la, a1, b1)) in spans.iter().enumerate() {
        for &(lb, a2, b2) in &spans[i + 1..] {
            if la == lb && ((a1 < a2 && b1 > b2) || (a1 > a2 && b1 < b2)) {
                count += 1;
            }
        }
    }
    count
}

/// Horizontal centres: each layer in its order, nodes pulled towards their neighbours
/// (alternately those above and below) as far as the spacing allows.
fn place(layers: &[Vec<usize>], links: &[(usize, usize)], width: &[f64], real: usize) -> Vec<f64> {
    let gap = |a: usize, b: usize| if a < real && b < real { H_GAP } else { DUMMY_GAP };
    let mut x = vec![0.0; width.len()];
    for layer in layers {
        let mut left = 0.0;
        let mut before: Option<usize> = None;
        for &v in layer {
            left += before.map_or(0.0, |u| gap(u, v));
            x[v] = left + width[v] / 2.0;
            left += width[v];
            before = Some(v);
        }
    }
    for pass in 0..6 {
        let order: Vec<usize> = if pass % 2 == 0 { (0..layers.len()).collect() } else { (0..layers.len()).rev().collect() };
        for l in order {
            let desired: Vec<f64> = layers[l]
                .iter()
                .map(|&v| {
                    let near: Vec<f64> = links
                        .iter()
                        .filter_map(|&(a, b)| match pass % 2 {
                            0 if b == v => Some(x[a]),
                            1 if a == v => Some(x[b]),
                            _ => None,
                        })
                        .collect();
                    if near.is_empty() { x[v] } else { near.iter().sum::<f64>() / near.len() as f64 }
                })
                .collect();
            let gaps: Vec<f64> = layers[l].windows(2).map(|w| (width[w[0]] + width[w[1]]) / 2.0 + gap(w[0], w[1])).collect();
            for (v, p) in layers[l].iter().zip(spaced(&desired, &gaps)) {
                x[*v] = p;
            }
        }
    }
    let min_left = (0..width.len()).map(|v| x[v] - width[v] / 2.0).fold(f64::INFINITY, f64::min);
    let shift = if min_left.is_finite() { MARGIN - min_left } else { 0.0 };
    x.iter().map(|p| p + shift).collect()
}

/// Positions as close as possible (least squares) to `desired` such that neighbour `i`
/// and `i + 1` are at least `gaps[i]` apart: isotonic regression by pooling adjacent
/// violators, on the desired positions less the cumulative gaps.
pub fn spaced(desired: &[f64], gaps: &[f64]) -> Vec<f64> {
    let offsets: Vec<f64> = std::iter::once(0.0)
        .chain(gaps.iter().scan(0.0, |sum, g| {
            *sum += g;
            Some(*sum)
        }))
        .collect();
    // Blocks of (mean, count) that must share one value.
    let mut blocks: Vec<(f64, usize)> = Vec::new();
    for (d, o) in desired.iter().zip(&offsets) {
        blocks.push((d - o, 1));
        while blocks.len() > 1 && blocks[blocks.len() - 2].0 > blocks[blocks.len() - 1].0 {
            let (m2, c2) = blocks.pop().unwrap_or((0.0, 0));
            let (m1, c1) = blocks.pop().unwrap_or((0.0, 0));
            blocks.push(((m1 * c1 as f64 + m2 * c2 as f64) / (c1 + c2) as f64, c1 + c2));
        }
    }
    let values = blocks.iter().flat_map(|&(m, c)| std::iter::repeat_n(m, c));
    values.zip(&offsets).map(|(q, o)| q + o).collect()
}

/// The y of each layer's centre line, and the total height.
fn layer_rows(layers: &[Vec<usize>], sizes: &[(f64, f64)], real: usize) -> (Vec<f64>, f64) {
    let mut y = Vec::with_capacity(layers.len());
    let mut top = MARGIN;
    for layer in layers {
        let h = layer.iter().filter(|&&v| v < real).map(|&v| sizes[v].1).fold(0.0, f64::max);
        y.push(top + h / 2.0);
        top += h + V_GAP;
    }
    (y, top - V_GAP + MARGIN)
}
