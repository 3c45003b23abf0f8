//! The steps of a call, over a [`Node`](balancer_kit::node::Node): read
//! what the node has, plan, upload the new file, run the apply script. The
//! component's node is the host's `ssh` import; the tests' is a local shell
//! against a real HAProxy.

use balancer_kit::node::{self, ANSWER_MS, Change};

use crate::{
    Applied, Failure, Kind,
    config::Config,
    plan::{self, Running, Runtime},
    script::{self, CHANGED_SINCE_READ},
    upstream,
};

/// Less than this left for the apply script, and it is not started.
const MIN_BUDGET_MS: u64 = 3_000;
/// How many times a node that changed between the read and the apply is
/// read again.
const ATTEMPTS: usize = 3;

/// Makes the node's HAProxy serve these upstreams' members.
pub(crate) fn upstreams(change: &Change<'_, Config>) -> Result<Applied, Failure> {
    let (config, upstreams, node) = (change.config, change.upstreams, change.node);
    upstream::check_all(upstreams)?;
    if upstreams.is_empty() {
        return Ok(Applied::unchanged("nothing to apply"));
    }
    let backends: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
    let mut log = Vec::new();
    for attempt in 1..=ATTEMPTS {
        let (out, took) = node::read(
            node,
            &script::read_script(config, &backends),
            "servers and file",
        )?;
        let read = script::parse_read(config, &backends, &out)?;
        log.push(took);
        let runtime: Vec<Runtime> = read
            .state
            .iter()
            .map(|lines| {
                if lines.iter().any(|l| l.starts_with("Can't find backend")) {
                    Runtime::Missing
                } else {
                    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
                    Runtime::Servers(Running::parse(&lines))
                }
            })
            .collect();
        let plan = plan::plan(&config.config_file, &read.file, upstreams, &runtime)?;
        log.extend(plan.log.iter().cloned());
        if plan.is_empty() {
            return Ok(Applied {
                changed: false,
                log: log.join("\n"),
            });
        }
        let candidate = script::candidate(config, change.token);
        if let Some(file) = &plan.file {
            node.put_file(&candidate, file.as_bytes(), 0o644)?;
        }
        let budget = node.time_left_ms().saturating_sub(ANSWER_MS);
        if budget < MIN_BUDGET_MS {
            node::remove(node, std::slice::from_ref(&candidate));
            return Err(Failure::new(
                Kind::Timeout,
                "too little of the call's time is left to change HAProxy; nothing was changed",
                true,
            ));
        }
        let apply = script::apply_script(config, &backends, &plan, &read.sum, change.token, budget);
        let out = node::run(node, &apply, budget + ANSWER_MS / 2)?;
        if out.exit_code == Some(CHANGED_SINCE_READ) && attempt < ATTEMPTS {
            log.push("the node changed since it was read: reading it again".to_owned());
            continue;
        }
        let steps = script::outcome(out.exit_code, &out.stdout, &out.stderr)?;
        log.extend(steps);
        return Ok(Applied {
            changed: true,
            log: log.join("\n"),
        });
    }
    Err(Failure::new(
        Kind::Conflict,
        "the node kept changing between reading and applying",
        true,
    ))
}
