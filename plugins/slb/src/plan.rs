//! What to change: the difference between the servers wanted and those
//! attached, as SLB calls of at most [`BATCH`] servers each.
//!
//! Pure: `converge` asks for the next step after every read of the load
//! balancer, so a step is always computed from what SLB says it has.

use std::collections::HashMap;

use serde_json::{Value, json};

/// The most servers one Add/Remove/SetBackendServers call takes.
pub(crate) const BATCH: usize = 20;

/// A server attached to the load balancer's default server group, as
/// DescribeLoadBalancerAttribute says (read the same way by the `aliyun`
/// plugin).
pub(crate) use aliyun_rpc::slb::Attached;

/// A server wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wanted {
    /// The ECS instance id.
    pub(crate) server_id: String,
    /// 0–100.
    pub(crate) weight: u32,
    /// Its private address, for the log and errors.
    pub(crate) address: String,
}

/// The three changes, in the order they are made: adding first and
/// removing last keeps the load balancer's capacity up during a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// AddBackendServers.
    Add,
    /// SetBackendServers (weights).
    Set,
    /// RemoveBackendServers.
    Remove,
}

impl Op {
    /// The SLB action.
    pub(crate) fn action(self) -> &'static str {
        match self {
            Self::Add => "AddBackendServers",
            Self::Set => "SetBackendServers",
            Self::Remove => "RemoveBackendServers",
        }
    }
}

/// One call: an operation on at most [`BATCH`] servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    /// What it does.
    pub(crate) op: Op,
    /// The servers: id, weight (the wanted one; the attached one for a
    /// removal) and type.
    pub(crate) servers: Vec<(String, u32, String)>,
}

impl Step {
    /// The `BackendServers` parameter: a strict JSON array, weights as
    /// strings as Aliyun's docs show them.
    pub(crate) fn backend_servers(&self, description: &str) -> String {
        let items: Vec<Value> = self
            .servers
            .iter()
            .map(|(id, weight, kind)| match self.op {
                Op::Add => json!({
                    "ServerId": id,
                    "Weight": weight.to_string(),
                    "Type": kind,
                    "Description": description,
                }),
                Op::Set => json!({"ServerId": id, "Weight": weight.to_string(), "Type": kind}),
                Op::Remove => json!({"ServerId": id, "Type": kind}),
            })
            .collect();
        Value::Array(items).to_string()
    }

    /// The server ids, for the log.
    pub(crate) fn ids(&self) -> Vec<&str> {
        self.servers.iter().map(|(id, _, _)| id.as_str()).collect()
    }
}

/// Every step from `attached` to `wanted`: adds, then weight changes, then
/// removals, each in batches of at most [`BATCH`], in DCP's order (SLB's for
/// removals). Empty when they match.
pub(crate) fn steps(wanted: &[Wanted], attached: &[Attached]) -> Vec<Step> {
    let now: HashMap<&str, &Attached> =
        attached.iter().map(|a| (a.server_id.as_str(), a)).collect();
    let wanted_ids: HashMap<&str, &Wanted> =
        wanted.iter().map(|w| (w.server_id.as_str(), w)).collect();
    let ecs = || "ecs".to_owned();
    let add: Vec<_> = wanted
        .iter()
        .filter(|w| !now.contains_key(w.server_id.as_str()))
        .map(|w| (w.server_id.clone(), w.weight, ecs()))
        .collect();
    let set: Vec<_> = wanted
        .iter()
        .filter_map(|w| {
            let a = now.get(w.server_id.as_str())?;
            (a.weight != w.weight).then(|| (w.server_id.clone(), w.weight, a.kind.clone()))
        })
        .collect();
    let remove: Vec<_> = attached
        .iter()
        .filter(|a| !wanted_ids.contains_key(a.server_id.as_str()))
        .map(|a| (a.server_id.clone(), a.weight, a.kind.clone()))
        .collect();
    let mut out = Vec::new();
    for (op, servers) in [(Op::Add, add), (Op::Set, set), (Op::Remove, remove)] {
        for chunk in servers.chunks(BATCH) {
            out.push(Step {
                op,
                servers: chunk.to_vec(),
            });
        }
    }
    out
}

/// What changed between two reads: added, re-weighted and removed servers.
pub(crate) fn changes(before: &[Attached], after: &[Attached]) -> (usize, usize, usize) {
    let old: HashMap<&str, u32> = before
        .iter()
        .map(|a| (a.server_id.as_str(), a.weight))
        .collect();
    let new: HashMap<&str, u32> = after
        .iter()
        .map(|a| (a.server_id.as_str(), a.weight))
        .collect();
    let added = new.keys().filter(|id| !old.contains_key(*id)).count();
    let removed = old.keys().filter(|id| !new.contains_key(*id)).count();
    let reweighted = new
        .iter()
        .filter(|(id, w)| old.get(*id).is_some_and(|o| o != *w))
        .count();
    (added, reweighted, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(n: usize, weight: u32) -> Vec<Wanted> {
        (0..n)
            .map(|i| Wanted {
                server_id: format!("i-{i:03}"),
                weight,
                address: format!("10.0.0.{i}"),
            })
            .collect()
    }

    fn attached(ids: impl IntoIterator<Item = usize>, weight: u32) -> Vec<Attached> {
        ids.into_iter()
            .map(|i| Attached {
                server_id: format!("i-{i:03}"),
                weight,
                kind: "ecs".to_owned(),
            })
            .collect()
    }

    #[test]
    fn forty_five_new_servers_are_three_adds_of_at_most_twenty() {
        let steps = steps(&wanted(45, 100), &[]);
        let sizes: Vec<(Op, usize)> = steps.iter().map(|s| (s.op, s.servers.len())).collect();
        assert_eq!(sizes, [(Op::Add, 20), (Op::Add, 20), (Op::Add, 5)]);
        assert_eq!(steps[0].ids()[0], "i-000", "DCP's order");
        let json: Value = serde_json::from_str(&steps[2].backend_servers("dcp-web")).unwrap();
        assert_eq!(
            json[0],
            json!({"ServerId":"i-040","Weight":"100","Type":"ecs","Description":"dcp-web"})
        );
    }

    #[test]
    fn adds_come_before_weights_and_removals_last() {
        // Attached: 0..30 at weight 100; wanted: 10..40, with 10..15 at 50.
        let mut want = wanted(40, 100).split_off(10);
        for w in want.iter_mut().take(5) {
            w.weight = 50;
        }
        let steps = steps(&want, &attached(0..30, 100));
        let shape: Vec<(Op, usize)> = steps.iter().map(|s| (s.op, s.servers.len())).collect();
        assert_eq!(shape, [(Op::Add, 10), (Op::Set, 5), (Op::Remove, 10)]);
        assert_eq!(steps[2].ids()[0], "i-000");
        let json: Value = serde_json::from_str(&steps[1].backend_servers("x")).unwrap();
        assert_eq!(
            json[0],
            json!({"ServerId":"i-010","Weight":"50","Type":"ecs"})
        );
        let json: Value = serde_json::from_str(&steps[2].backend_servers("x")).unwrap();
        assert_eq!(json[0], json!({"ServerId":"i-000","Type":"ecs"}));
    }

    #[test]
    fn nothing_to_do_when_they_match_and_changes_are_counted() {
        assert!(steps(&wanted(3, 7), &attached(0..3, 7)).is_empty());
        let everything_goes = steps(&[], &attached(0..41, 1));
        assert_eq!(everything_goes.len(), 3);
        assert!(everything_goes.iter().all(|s| s.op == Op::Remove));
        assert_eq!(
            changes(&attached(0..5, 100), &attached(3..8, 100)),
            (3, 0, 3)
        );
        assert_eq!(changes(&attached(0..5, 100), &attached(0..5, 9)), (0, 5, 0));
    }
}
