//! The split-brain rules: which cohort survives a reconfiguration.
//!
//! Input: the frozen votes of one epoch (whom each voter hears). Two voters
//! are connected when each hears the other. Each voter proposes a cohort: a
//! clique (every member hears every other) grown from itself, dropping the
//! worst-connected member (ties: the highest number) until what is left is
//! a clique. Among the proposed cohorts the survivor is, in this order:
//!
//! 1. the larger cohort;
//! 2. equal sizes: the higher total weight (weight never overrides size);
//! 3. equal size and weight: the cohort holding the lowest node number;
//!
//! (and, for determinism only, the lowest bitmap). The function depends on
//! the votes alone, so every node holding the same votes picks the same
//! cohort; a cohort is a clique, so of two nodes that cannot talk at most
//! one survives.

use crate::nodeset::NodeSet;
use crate::wire::Vote;
use icx_core::NodeId;
use std::collections::BTreeMap;
use std::fmt;

/// Which rule picked the survivor over the runner-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Only one cohort was proposed.
    Unopposed,
    Size,
    Weight,
    LowestNode,
    /// Same size, weight and lowest node (overlapping cohorts): lowest bitmap.
    Bitmap,
    /// Network-only mode: the best cohort holds no strict majority of the
    /// configured votes (nor exactly half with node 1): nobody survives.
    NoQuorum,
}

/// A proposed cohort and its total weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cohort {
    pub members: NodeSet,
    pub weight: u32,
}

/// The outcome of the rules over one epoch's votes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub survivors: NodeSet,
    pub rule: Rule,
    /// Every distinct cohort proposed, best first.
    pub cohorts: Vec<Cohort>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "survivors {} by {:?}; cohorts",
            self.survivors, self.rule
        )?;
        for c in &self.cohorts {
            write!(
                f,
                " {} (size {}, weight {})",
                c.members,
                c.members.len(),
                c.weight
            )?;
        }
        Ok(())
    }
}

/// Quorum of network-only mode: a strict majority of `configured` nodes, or
/// exactly half when holding node 1.
pub fn has_quorum(set: &NodeSet, configured: u16) -> bool {
    let n = set.len() * 2;
    let c = usize::from(configured);
    n > c || (n == c && set.contains(NodeId(1)))
}

/// Applies the rules to `votes` (candidates: voters that are ready).
/// `quorum`: `Some(configured)` in network-only mode.
pub fn decide(votes: &BTreeMap<NodeId, Vote>, quorum: Option<u16>) -> Outcome {
    let voters: NodeSet = votes.values().filter(|v| v.ready).map(|v| v.node).collect();
    let weight_of = |s: &NodeSet| -> u32 {
        s.iter()
            .filter_map(|n| votes.get(&n))
            .map(|v| u32::from(v.weight))
            .sum()
    };
    let mutual = |a: NodeId| -> NodeSet {
        let Some(va) = votes.get(&a) else {
            return NodeSet::EMPTY;
        };
        va.conn
            .intersect(&voters)
            .iter()
            .filter(|&b| b != a && votes.get(&b).is_some_and(|vb| vb.conn.contains(a)))
            .collect()
    };
    let adj: BTreeMap<NodeId, NodeSet> = voters.iter().map(|v| (v, mutual(v))).collect();
    let mut cohorts: Vec<Cohort> = Vec::new();
    for v in voters.iter() {
        let mut set = adj[&v];
        set.insert(v);
        loop {
            // The member with the fewest neighbours inside, highest number on ties.
            let worst = set
                .iter()
                .map(|m| (adj[&m].intersect(&set).len(), m))
                .min_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            match worst {
                Some((deg, m)) if deg + 1 < set.len() => set.remove(m),
                _ => break,
            }
        }
        if !cohorts.iter().any(|c| c.members == set) {
            cohorts.push(Cohort {
                members: set,
                weight: weight_of(&set),
            });
        }
    }
    let key = |c: &Cohort| {
        (
            std::cmp::Reverse(c.members.len()),
            std::cmp::Reverse(c.weight),
            c.members.lowest(),
            bitmap_key(&c.members),
        )
    };
    cohorts.sort_by_key(key);
    let rule = match (cohorts.first(), cohorts.get(1)) {
        (None, _) => Rule::NoQuorum,
        (Some(_), None) => Rule::Unopposed,
        (Some(a), Some(b)) => {
            if a.members.len() != b.members.len() {
                Rule::Size
            } else if a.weight != b.weight {
                Rule::Weight
            } else if a.members.lowest() != b.members.lowest() {
                Rule::LowestNode
            } else {
                Rule::Bitmap
            }
        }
    };
    let mut survivors = cohorts.first().map(|c| c.members).unwrap_or_default();
    let mut rule = rule;
    if let Some(configured) = quorum {
        if !has_quorum(&survivors, configured) {
            survivors = NodeSet::EMPTY;
            rule = Rule::NoQuorum;
        }
    }
    Outcome {
        survivors,
        rule,
        cohorts,
    }
}

/// Orders sets so that the one holding lower nodes comes first.
fn bitmap_key(s: &NodeSet) -> Vec<u16> {
    s.iter().map(|n| n.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn votes(spec: &[(u16, &[u16], u16)]) -> BTreeMap<NodeId, Vote> {
        spec.iter()
            .map(|&(n, conn, w)| {
                let mut c: NodeSet = conn.iter().map(|&i| NodeId(i)).collect();
                c.insert(NodeId(n));
                (
                    NodeId(n),
                    Vote {
                        node: NodeId(n),
                        incarnation: 1,
                        epoch: 2,
                        weight: w,
                        ready: true,
                        conn: c,
                    },
                )
            })
            .collect()
    }

    fn set(ids: &[u16]) -> NodeSet {
        ids.iter().map(|&i| NodeId(i)).collect()
    }

    #[test]
    fn seed_000_two_nodes() {
        let o = decide(&votes(&[(1, &[], 0), (2, &[], 0)]), None);
        assert_eq!((o.survivors, o.rule), (set(&[1]), Rule::LowestNode));
        let o = decide(&votes(&[(1, &[], 0), (2, &[], 1)]), None);
        assert_eq!((o.survivors, o.rule), (set(&[2]), Rule::Weight));
        let o = decide(&votes(&[(1, &[], 1), (2, &[], 1)]), None);
        assert_eq!((o.survivors, o.rule), (set(&[1]), Rule::LowestNode));
    }

    #[test]
    fn size_beats_weight_and_cliques() {
        let o = decide(&votes(&[(1, &[], 5), (2, &[3], 0), (3, &[2], 0)]), None);
        assert_eq!((o.survivors, o.rule), (set(&[2, 3]), Rule::Size));
        // 1-2 cut, both reach 3: {1,3} wins on the lowest node.
        let o = decide(&votes(&[(1, &[3], 0), (2, &[3], 0), (3, &[1, 2], 0)]), None);
        assert_eq!(o.survivors, set(&[1, 3]));
        // One way: 1 hears 2, 2 does not hear 1: not connected.
        let o = decide(
            &votes(&[(1, &[2, 3], 0), (2, &[3], 0), (3, &[1, 2], 0)]),
            None,
        );
        assert_eq!(o.survivors, set(&[1, 3]));
        // {1,2}|{3,4}
        let o = decide(
            &votes(&[(1, &[2], 0), (2, &[1], 0), (3, &[4], 0), (4, &[3], 0)]),
            None,
        );
        assert_eq!((o.survivors, o.rule), (set(&[1, 2]), Rule::LowestNode));
    }

    #[test]
    fn network_only_quorum() {
        let v = votes(&[(1, &[2], 0), (2, &[1], 0)]);
        assert_eq!(
            decide(&v, Some(4)).survivors,
            set(&[1, 2]),
            "half with node 1"
        );
        let v = votes(&[(3, &[4], 0), (4, &[3], 0)]);
        let o = decide(&v, Some(4));
        assert_eq!((o.survivors, o.rule), (NodeSet::EMPTY, Rule::NoQuorum));
        let v = votes(&[(3, &[4, 5], 0), (4, &[3, 5], 0), (5, &[3, 4], 0)]);
        assert_eq!(decide(&v, Some(5)).survivors, set(&[3, 4, 5]));
    }
}
