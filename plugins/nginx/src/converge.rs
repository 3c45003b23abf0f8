//! The steps of a change, over a [`Node`]: read what the node has, upload
//! what differs, run the apply script. The component's node is the host's
//! `ssh` import; the tests' is a local shell against a real nginx.

use std::collections::BTreeSet;

use balancer_kit::node::{self, ANSWER_MS, Change, Node, READ_TIMEOUT_MS};
use sha2::{Digest as _, Sha256};

use crate::{
    Applied, Failure, Kind,
    config::Config,
    publish::{self, File},
    script::{self, Live, Stage},
    upstream,
};

/// Less than this left for the apply script, and it is not started.
const MIN_BUDGET_MS: u64 = 2_000;

/// One file as DCP wants it on the node.
#[derive(Debug, Clone)]
struct Desired {
    /// For the log: `upstream web`, or the published path.
    label: String,
    /// Absolute.
    live: String,
    content: String,
    /// Upstreams only.
    revision: Option<u64>,
    /// For the log: what the new content is.
    summary: String,
}

fn sha256_hex(content: &str) -> String {
    Sha256::digest(content.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Makes the node serve these upstreams (others in the directory are left
/// alone).
pub(crate) fn upstreams(change: &Change<'_, Config>) -> Result<Applied, Failure> {
    let (config, upstreams) = (change.config, change.upstreams);
    upstream::check_all(upstreams)?;
    let desired = upstreams
        .iter()
        .map(|u| {
            let members = match u.backends.len() {
                0 => "no backends (502)".to_owned(),
                1 => "1 backend".to_owned(),
                n => format!("{n} backends"),
            };
            Ok(Desired {
                label: format!("upstream {}", u.name),
                live: config.upstream_file(&u.name),
                content: upstream::render(u)?,
                revision: Some(u.revision),
                summary: format!("revision {}, {members}", u.revision),
            })
        })
        .collect::<Result<Vec<_>, Failure>>()?;
    let dirs = [config.under_prefix(&config.upstream_dir)];
    converge(config, &desired, &dirs, change.node, change.token)
}

/// Publishes files under the prefix.
pub(crate) fn files(
    config: &Config,
    files: &[File],
    node: &dyn Node,
    token: &str,
) -> Result<Applied, Failure> {
    let paths = publish::check(files)?;
    let desired: Vec<Desired> = files
        .iter()
        .zip(paths)
        .map(|(file, path)| Desired {
            live: config.under_prefix(&path),
            label: path,
            content: file.content.clone(),
            revision: None,
            summary: format!("{} bytes", file.content.len()),
        })
        .collect();
    let dirs: BTreeSet<String> = desired
        .iter()
        .filter_map(|d| d.live.rsplit_once('/').map(|(dir, _)| dir.to_owned()))
        .filter(|dir| dir.as_str() != config.prefix && !dir.is_empty())
        .collect();
    converge(
        config,
        &desired,
        &dirs.into_iter().collect::<Vec<_>>(),
        node,
        token,
    )
}

fn converge(
    config: &Config,
    desired: &[Desired],
    dirs: &[String],
    node: &dyn Node,
    token: &str,
) -> Result<Applied, Failure> {
    if desired.is_empty() {
        return Ok(Applied::unchanged("nothing to apply"));
    }
    let mut log = Vec::new();
    let paths: Vec<String> = desired.iter().map(|d| d.live.clone()).collect();
    // Each phase's time goes to the log: on a slow change, the operator
    // sees whether SSH, the upload, `nginx -T` or the reload took it.
    let (out, took) = node::read(node, &script::read_script(config, &paths, dirs), "files")?;
    let read = script::parse_read(config, &paths, &out)?;
    let read_at = node.time_left_ms();
    log.push(took);
    if read.pending {
        log.push(
            "an earlier change was cut off before its reload was verified: \
             every file is written and nginx reloaded"
                .to_owned(),
        );
    }
    let mut stages = Vec::new();
    for (want, live) in desired.iter().zip(&read.files) {
        let label = &want.label;
        match live {
            Live::Other => {
                return Err(Failure::invalid(format!(
                    "{label}: {} exists on the node and is not a file",
                    want.live
                )));
            }
            Live::File { sha256, first_line } => {
                let serving = upstream::revision_of(first_line);
                if let (Some(wanted), Some(serving)) = (want.revision, serving)
                    && serving > wanted
                {
                    log.push(format!(
                        "{label}: kept: the node serves revision {serving}, newer than {wanted}"
                    ));
                    continue;
                }
                if !read.pending && sha256.as_deref() == Some(sha256_hex(&want.content).as_str()) {
                    log.push(format!("{label}: unchanged ({})", want.summary));
                    continue;
                }
                let from = match (want.revision, serving) {
                    (Some(_), Some(serving)) => format!("from revision {serving} to "),
                    _ => String::new(),
                };
                log.push(format!("{label}: {from}{}", want.summary));
            }
            Live::Missing => log.push(format!("{label}: new, {}", want.summary)),
        }
        stages.push(want);
    }
    if stages.is_empty() {
        return Ok(Applied {
            changed: false,
            log: log.join("\n"),
        });
    }
    let candidates: Vec<String> = stages
        .iter()
        .map(|s| script::candidate(&s.live, token))
        .collect();
    for (stage, candidate) in stages.iter().zip(&candidates) {
        if let Err(failure) = node.put_file(candidate, stage.content.as_bytes(), 0o644) {
            node::remove(node, &candidates);
            return Err(failure);
        }
    }
    log.push(format!(
        "uploaded {} file(s) in {} ms",
        stages.len(),
        read_at.saturating_sub(node.time_left_ms())
    ));
    let reload_ms = u64::from(config.reload_timeout_ms);
    let budget = node
        .time_left_ms()
        .saturating_sub(ANSWER_MS)
        .min(3 * reload_ms + READ_TIMEOUT_MS);
    if budget < MIN_BUDGET_MS {
        node::remove(node, &candidates);
        return Err(Failure::new(
            Kind::Timeout,
            "too little of the call's time is left to change nginx; nothing was changed",
            true,
        ));
    }
    let stages: Vec<Stage> = stages
        .iter()
        .map(|s| Stage {
            live: s.live.clone(),
            revision: s.revision,
        })
        .collect();
    let apply = script::apply_script(config, token, &stages, budget);
    let out = node::run(node, &apply, budget + ANSWER_MS / 2)?;
    let (changed, steps) = script::outcome(out.exit_code, &out.stdout, &out.stderr)?;
    log.extend(steps);
    Ok(Applied {
        changed,
        log: log.join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_lowercase_hex() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
