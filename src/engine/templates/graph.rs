//! Small graph algorithms shared by template and plan validation.

/// A cycle among nodes `0..n` whose edges `successors` gives, as the node path that closes
/// it (first node repeated at the end), or `None` if the graph is acyclic.
pub fn find_cycle(n: usize, successors: impl Fn(usize) -> Vec<usize>) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Fresh,
        Open,
        Closed,
    }
    let mut marks = vec![Mark::Fresh; n];
    for root in 0..n {
        if marks[root] != Mark::Fresh {
            continue;
        }
        // Iterative DFS keeping the current path, so the cycle can be named.
        let mut path: Vec<(usize, Vec<usize>)> = vec![(root, successors(root))];
        marks[root] = Mark::Open;
        while let Some((node, next)) = path.last_mut() {
            let node = *node;
            match next.pop() {
                Some(succ) if marks[succ] == Mark::Open => {
                    let start = path.iter().position(|(n, _)| *n == succ).unwrap_or(0);
                    return Some(path[start..].iter().map(|(n, _)| *n).chain([succ]).collect());
                }
                Some(succ) if marks[succ] == Mark::Fresh => {
                    marks[succ] = Mark::Open;
                    let next = successors(succ);
                    path.push((succ, next));
                }
                Some(_) => {}
                None => {
                    marks[node] = Mark::Closed;
                    path.pop();
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::find_cycle;

    #[test]
    fn cycles_are_found_and_named_from_their_first_node() {
        assert_eq!(find_cycle(3, |i| if i < 2 { vec![i + 1] } else { vec![] }), None);
        assert_eq!(find_cycle(3, |i| vec![(i + 1) % 3]), Some(vec![0, 1, 2, 0]));
        assert_eq!(find_cycle(2, |i| if i == 1 { vec![1] } else { vec![] }), Some(vec![1, 1]));
    }
}
