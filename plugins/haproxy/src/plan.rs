//! What to do on a node: from the servers its HAProxy runs and the file it
//! starts from, to DCP's desired members — Runtime API commands, the
//! servers to drain and delete, and the new file.

use std::collections::{HashMap, HashSet};

use crate::{
    Failure, cfg,
    upstream::{self, SERVER_PREFIX, Upstream},
};

/// `srv_admin_state` bits that mean draining (forced, or inherited).
const DRAIN: u32 = 0x08 | 0x10;

/// One server as `show servers state` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Running {
    /// `srv_name`.
    pub(crate) name: String,
    /// `srv_admin_state`: maintenance and drain bits.
    pub(crate) admin: u32,
    /// `srv_uweight`: the weight the user set.
    pub(crate) weight: u32,
}

impl Running {
    fn maint(&self) -> bool {
        self.admin & !DRAIN != 0
    }

    fn draining(&self) -> bool {
        self.admin & DRAIN != 0
    }

    /// Parses `show servers state` lines (format 1): the header and
    /// anything not a server line are skipped.
    pub(crate) fn parse(lines: &[&str]) -> Vec<Self> {
        lines
            .iter()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() < 19 || !f[0].bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Some(Self {
                    name: f[3].to_owned(),
                    admin: f[6].parse().ok()?,
                    weight: f[7].parse().ok()?,
                })
            })
            .collect()
    }
}

/// A Runtime API command and what HAProxy answers when it did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Command {
    /// The command line.
    pub(crate) command: String,
    /// The answer on success (empty for most).
    pub(crate) expect: &'static str,
    /// For the log.
    pub(crate) say: String,
}

/// Everything a call does on its node, in the order it is done: servers
/// added first, then re-weighted, then the removed ones drained, waited
/// for and deleted — so capacity never dips on the way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Adds and enables.
    pub(crate) adds: Vec<Command>,
    /// Weight and state changes.
    pub(crate) changes: Vec<Command>,
    /// Drains of servers to remove.
    pub(crate) drains: Vec<Command>,
    /// `backend/server` to wait for and delete.
    pub(crate) removals: Vec<String>,
    /// The configuration file as it should be, if it differs.
    pub(crate) file: Option<String>,
    /// What was found, for the log.
    pub(crate) log: Vec<String>,
}

impl Plan {
    /// Whether the node needs nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.adds.is_empty()
            && self.changes.is_empty()
            && self.drains.is_empty()
            && self.removals.is_empty()
            && self.file.is_none()
    }
}

/// What the node has for one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Runtime {
    /// HAProxy runs no backend of that name.
    Missing,
    /// Its servers.
    Servers(Vec<Running>),
}

fn command(command: String, expect: &'static str, say: String) -> Command {
    Command {
        command,
        expect,
        say,
    }
}

/// The plan for these upstreams, given the file's text and each upstream's
/// running servers (same order as `upstreams`).
pub(crate) fn plan(
    config_file: &str,
    text: &str,
    upstreams: &[Upstream],
    runtime: &[Runtime],
) -> Result<Plan, Failure> {
    let mut plan = Plan::default();
    let mut new_text = text.to_owned();
    for (upstream, running) in upstreams.iter().zip(runtime) {
        let b = &upstream.name;
        let Some(section) = cfg::find(&new_text, b) else {
            return Err(Failure::invalid(format!(
                "upstream {b}: {config_file} has no `backend {b}` section; add one (DCP manages \
                 its servers, not the section)"
            )));
        };
        let Runtime::Servers(running) = running else {
            return Err(Failure::invalid(format!(
                "upstream {b}: the running HAProxy has no backend {b} (Can't find backend.); \
                 {config_file} has one, so HAProxy has not been reloaded since it was added"
            )));
        };
        let wanted = upstream::servers(upstream)?;
        if let Some(serving) = section.revision
            && serving > upstream.revision
        {
            plan.log.push(format!(
                "upstream {b}: kept: the node serves revision {serving}, newer than {}",
                upstream.revision
            ));
            continue;
        }
        if !section.others.is_empty() {
            plan.log.push(format!(
                "upstream {b}: servers not named {SERVER_PREFIX}… are the operator's and left as \
                 they are: {}",
                section.others.join(", ")
            ));
        }
        let now: HashMap<&str, &Running> = running
            .iter()
            .filter(|r| r.name.starts_with(SERVER_PREFIX))
            .map(|r| (r.name.as_str(), r))
            .collect();
        let (mut added, mut changed, mut removed) = (0, 0, 0);
        for server in &wanted {
            let (s, w) = (&server.name, server.weight);
            let Some(running) = now.get(s.as_str()) else {
                added += 1;
                let check = if section.checks { " check" } else { "" };
                plan.adds.push(command(
                    format!("add server {b}/{s} {} weight {w}{check}", server.address),
                    "New server registered.",
                    format!("{b}: added {s} ({}, weight {w})", server.address),
                ));
                if section.checks {
                    plan.adds.push(command(
                        format!("enable health {b}/{s}"),
                        "",
                        format!("{b}: health checks of {s} on"),
                    ));
                }
                plan.adds.push(command(
                    format!("enable server {b}/{s}"),
                    "",
                    format!("{b}: {s} enabled"),
                ));
                continue;
            };
            let before = plan.changes.len();
            if w > 0 {
                if running.weight != w {
                    plan.changes.push(command(
                        format!("set server {b}/{s} weight {w}"),
                        "",
                        format!("{b}: {s} weight {} -> {w}", running.weight),
                    ));
                }
                if running.maint() || running.draining() {
                    let was = if running.maint() {
                        "in maintenance"
                    } else {
                        "draining"
                    };
                    plan.changes.push(command(
                        format!("set server {b}/{s} state ready"),
                        "",
                        format!("{b}: {s} ready (was {was})"),
                    ));
                }
            } else if running.maint() || (!running.draining() && running.weight != 0) {
                plan.changes.push(command(
                    format!("set server {b}/{s} state drain"),
                    "",
                    format!("{b}: {s} draining (weight 0): no new sessions"),
                ));
            }
            if plan.changes.len() > before {
                changed += 1;
            }
        }
        let keep: HashSet<&str> = wanted.iter().map(|s| s.name.as_str()).collect();
        for running in running {
            let s = &running.name;
            if !s.starts_with(SERVER_PREFIX) || keep.contains(s.as_str()) {
                continue;
            }
            removed += 1;
            if !running.maint() && !running.draining() {
                plan.drains.push(command(
                    format!("set server {b}/{s} state drain"),
                    "",
                    format!("{b}: {s} draining, to be removed"),
                ));
            }
            plan.removals.push(format!("{b}/{s}"));
        }
        let block = cfg::block(
            &cfg::indent(&new_text, &section),
            b,
            upstream.revision,
            &wanted,
        );
        let rewritten = cfg::rewrite(&new_text, &section, &block);
        let file_changed = rewritten != new_text;
        new_text = rewritten;
        let from = match section.revision {
            Some(r) if r != upstream.revision => format!("revision {r} -> {}", upstream.revision),
            _ => format!("revision {}", upstream.revision),
        };
        let members = match wanted.len() {
            1 => "1 server".to_owned(),
            n => format!("{n} servers"),
        };
        let what = if added + changed + removed == 0 {
            if file_changed {
                "servers as wanted; file updated".to_owned()
            } else {
                "unchanged".to_owned()
            }
        } else {
            format!("{added} to add, {changed} to change, {removed} to remove")
        };
        plan.log
            .push(format!("upstream {b}: {from}, {members}: {what}"));
    }
    if new_text != text {
        plan.file = Some(new_text);
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use balancer_kit::upstream::Backend;

    const FILE: &str = "backend web\n    balance roundrobin\n    server static 10.0.0.9:80\n";

    fn upstream(revision: u64, backends: &[(&str, u32)]) -> Upstream {
        Upstream {
            name: "web".to_owned(),
            backends: backends
                .iter()
                .map(|(a, w)| Backend {
                    address: (*a).to_owned(),
                    port: 80,
                    weight: *w,
                })
                .collect(),
            revision,
        }
    }

    fn running(name: &str, admin: u32, weight: u32) -> Running {
        Running {
            name: name.to_owned(),
            admin,
            weight,
        }
    }

    fn commands(list: &[Command]) -> Vec<&str> {
        list.iter().map(|c| c.command.as_str()).collect()
    }

    #[test]
    fn show_servers_state_is_read() {
        let out = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight …\n\
                   3 web 1 static 10.0.0.9 2 0 1 1 40 1 0 2 0 0 0 0 - 80 - 0 0 - - 0\n\
                   3 web 2 dcp_10_0_0_1_80 10.0.0.1 2 8 5 5 0 1 0 0 0 0 0 0 - 80 - 0 0 - - 0\n";
        let lines: Vec<&str> = out.lines().collect();
        let servers = Running::parse(&lines);
        assert_eq!(
            servers,
            [running("static", 0, 1), running("dcp_10_0_0_1_80", 8, 5)]
        );
        assert!(servers[1].draining() && !servers[1].maint());
        assert!(running("x", 1, 1).maint());
        assert!(running("x", 1 | 8, 1).maint());
    }

    #[test]
    fn a_first_call_adds_everything_and_writes_the_file() {
        let want = upstream(1, &[("10.0.0.1", 5), ("10.0.0.2", 0)]);
        let plan = plan(
            "/h.cfg",
            FILE,
            &[want],
            &[Runtime::Servers(vec![running("static", 0, 1)])],
        )
        .unwrap();
        assert_eq!(
            commands(&plan.adds),
            [
                "add server web/dcp_10_0_0_1_80 10.0.0.1:80 weight 5",
                "enable server web/dcp_10_0_0_1_80",
                "add server web/dcp_10_0_0_2_80 10.0.0.2:80 weight 0",
                "enable server web/dcp_10_0_0_2_80",
            ]
        );
        assert_eq!(plan.adds[0].expect, "New server registered.");
        assert!(plan.changes.is_empty() && plan.drains.is_empty() && plan.removals.is_empty());
        assert_eq!(
            plan.file.as_deref(),
            Some(
                "backend web\n    balance roundrobin\n    server static 10.0.0.9:80\n    \
                 # Managed by DCP: upstream web, revision 1. DCP rewrites the dcp_ server lines of \
                 this section.\n    server dcp_10_0_0_1_80 10.0.0.1:80 weight 5\n    \
                 server dcp_10_0_0_2_80 10.0.0.2:80 weight 0\n"
            )
        );
        assert!(
            plan.log
                .iter()
                .any(|l| l.contains("left as they are: static"))
        );
        assert!(
            plan.log.contains(
                &"upstream web: revision 1, 2 servers: 2 to add, 0 to change, 0 to remove"
                    .to_owned()
            ),
            "{:?}",
            plan.log
        );
    }

    #[test]
    fn checked_backends_get_checked_servers() {
        let file = "backend web\n  default-server check inter 1s\n";
        let plan = plan(
            "/h.cfg",
            file,
            &[upstream(1, &[("10.0.0.1", 5)])],
            &[Runtime::Servers(Vec::new())],
        )
        .unwrap();
        assert_eq!(
            commands(&plan.adds),
            [
                "add server web/dcp_10_0_0_1_80 10.0.0.1:80 weight 5 check",
                "enable health web/dcp_10_0_0_1_80",
                "enable server web/dcp_10_0_0_1_80",
            ]
        );
    }

    #[test]
    fn weights_states_and_removals_converge() {
        let before = plan(
            "/h.cfg",
            FILE,
            &[upstream(
                1,
                &[
                    ("10.0.0.1", 5),
                    ("10.0.0.2", 5),
                    ("10.0.0.3", 5),
                    ("10.0.0.4", 0),
                ],
            )],
            &[Runtime::Servers(Vec::new())],
        )
        .unwrap();
        let file = before.file.unwrap();
        let want = upstream(
            2,
            &[
                ("10.0.0.1", 5),
                ("10.0.0.2", 9),
                ("10.0.0.3", 0),
                ("10.0.0.4", 3),
            ],
        );
        let plan = plan(
            "/h.cfg",
            &file,
            &[want],
            &[Runtime::Servers(vec![
                running("static", 0, 1),
                running("dcp_10_0_0_1_80", 0, 5),
                running("dcp_10_0_0_2_80", 1, 5),
                running("dcp_10_0_0_3_80", 0, 5),
                running("dcp_10_0_0_4_80", 0, 0),
                running("dcp_10_0_0_5_80", 0, 5),
                running("dcp_10_0_0_6_80", 1, 5),
            ])],
        )
        .unwrap();
        assert!(plan.adds.is_empty());
        assert_eq!(
            commands(&plan.changes),
            [
                "set server web/dcp_10_0_0_2_80 weight 9",
                "set server web/dcp_10_0_0_2_80 state ready",
                "set server web/dcp_10_0_0_3_80 state drain",
                "set server web/dcp_10_0_0_4_80 weight 3",
            ]
        );
        assert_eq!(
            commands(&plan.drains),
            ["set server web/dcp_10_0_0_5_80 state drain"]
        );
        assert_eq!(
            plan.removals,
            ["web/dcp_10_0_0_5_80", "web/dcp_10_0_0_6_80"]
        );
        let file = plan.file.unwrap();
        assert!(
            file.contains("server dcp_10_0_0_3_80 10.0.0.3:80 weight 0\n"),
            "{file}"
        );
        assert!(file.contains("revision 2."), "{file}");
        // Drained by state or by a weight of 0 (after a restart from the
        // file): both are weight 0.
        for admin_weight in [(8, 5), (0, 0)] {
            let again = super::plan(
                "/h.cfg",
                &file,
                &[upstream(2, &[("10.0.0.3", 0)])],
                &[Runtime::Servers(vec![running(
                    "dcp_10_0_0_3_80",
                    admin_weight.0,
                    admin_weight.1,
                )])],
            )
            .unwrap();
            assert!(again.changes.is_empty(), "{admin_weight:?}");
        }
    }

    #[test]
    fn the_same_state_is_nothing_to_do_and_an_older_revision_is_kept() {
        let want = upstream(3, &[("10.0.0.1", 5)]);
        let first = plan(
            "/h.cfg",
            FILE,
            std::slice::from_ref(&want),
            &[Runtime::Servers(Vec::new())],
        )
        .unwrap();
        let file = first.file.unwrap();
        let running = Runtime::Servers(vec![running("dcp_10_0_0_1_80", 0, 5)]);
        let same = plan("/h.cfg", &file, &[want], std::slice::from_ref(&running)).unwrap();
        assert!(same.is_empty(), "{same:?}");
        assert_eq!(
            same.log.last().unwrap(),
            "upstream web: revision 3, 1 server: unchanged"
        );
        let older = plan("/h.cfg", &file, &[upstream(2, &[])], &[running]).unwrap();
        assert!(older.is_empty(), "{older:?}");
        assert_eq!(
            older.log,
            ["upstream web: kept: the node serves revision 3, newer than 2"]
        );
    }

    #[test]
    fn a_missing_backend_is_named() {
        let missing = plan(
            "/h.cfg",
            FILE,
            &[Upstream {
                name: "api".to_owned(),
                backends: Vec::new(),
                revision: 1,
            }],
            &[Runtime::Servers(Vec::new())],
        )
        .unwrap_err();
        assert_eq!(missing.kind, crate::Kind::InvalidInput);
        assert!(
            missing
                .message
                .starts_with("upstream api: /h.cfg has no `backend api` section"),
            "{}",
            missing.message
        );
        let not_running =
            plan("/h.cfg", FILE, &[upstream(1, &[])], &[Runtime::Missing]).unwrap_err();
        assert!(
            not_running
                .message
                .contains("the running HAProxy has no backend web"),
            "{}",
            not_running.message
        );
    }
}
