//! A unit's main configuration: files kept in every version, and releases
//! that publish a set of file versions to the unit's nodes one at a time —
//! checked by the balancer before they go live, restored on any failure —
//! and roll back to any earlier release.

use std::sync::Arc;

use dcp_api_types::{ConfigFileInput, ExecutionInput, FileRef};

use super::{Discovery, Error};
use crate::{
    plugins::{ConfigFile, LoadBalancer as _},
    store::{ConfigFileRecord, ReleaseRecord},
    validate::{self, Invalid},
};

/// Longest file path.
pub const PATH_MAX: usize = 255;
/// Largest file, in bytes.
pub const FILE_MAX: usize = 1 << 20;
/// Most files in one release.
pub const FILES_MAX: usize = 200;

/// A file path relative to the balancer's configuration directory: it ends
/// up in shell text and file systems, so only plain characters, no `..`.
fn file_path(field: &str, path: &str) -> Result<(), Invalid> {
    validate::name(field.to_owned(), path, PATH_MAX)?;
    if path.starts_with('/') {
        return Err(Invalid::new(
            field.to_owned(),
            "must be relative to the configuration directory (no leading /)",
        ));
    }
    if let Some(bad) = path
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !matches!(c, '.' | '_' | '-' | '/'))
    {
        return Err(Invalid::new(
            field.to_owned(),
            format!("may contain only letters, digits, '.', '_', '-' and '/' (found {bad:?})"),
        ));
    }
    if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(Invalid::new(
            field.to_owned(),
            "must not have empty, '.' or '..' parts",
        ));
    }
    Ok(())
}

/// A node's outcome in a release.
const SKIPPED: &str = "not published: an earlier node failed, so this one keeps its configuration";

impl Discovery {
    /// Stores the next version of one of a unit's files.
    pub async fn add_file(
        &self,
        unit_id: i64,
        input: ConfigFileInput,
        by: &str,
    ) -> Result<ConfigFileRecord, Error> {
        self.store.lb_unit(unit_id).await?;
        let mut checks = validate::Checks::default();
        checks.check(file_path("path", &input.path));
        if input.content.len() > FILE_MAX {
            checks.check(Err(Invalid::new(
                "content",
                format!("must be at most {FILE_MAX} bytes"),
            )));
        }
        if input.content.contains('\0') {
            checks.check(Err(Invalid::new("content", "must not contain NUL")));
        }
        checks.finish()?;
        Ok(self
            .store
            .add_config_file(unit_id, &input.path, &input.content, by)
            .await?)
    }

    /// Publishes file versions (by default the newest of every file) to a
    /// unit's nodes, in the background; answers the release, pending.
    pub async fn publish(
        self: &Arc<Self>,
        unit_id: i64,
        files: Option<Vec<FileRef>>,
        rollback_of: Option<i64>,
        by: &str,
    ) -> Result<ReleaseRecord, Error> {
        let unit = self.store.lb_unit(unit_id).await?;
        let versions = self.store.config_file_versions(unit_id).await?;
        let files = match files {
            Some(files) => files,
            None => {
                let mut newest: Vec<FileRef> = Vec::new();
                for v in &versions {
                    if !newest.iter().any(|f| f.path == v.path) {
                        newest.push(FileRef {
                            path: v.path.clone(),
                            version: v.version,
                        });
                    }
                }
                newest
            }
        };
        if files.is_empty() {
            return Err(Invalid::new("files", "the unit has no configuration files yet").into());
        }
        if files.len() > FILES_MAX {
            return Err(Invalid::new("files", format!("at most {FILES_MAX} files")).into());
        }
        for (i, f) in files.iter().enumerate() {
            if !versions
                .iter()
                .any(|v| v.path == f.path && v.version == f.version)
            {
                return Err(Invalid::new(
                    format!("files[{i}].version"),
                    format!(
                        "unit {} has no version {} of {}",
                        unit.name, f.version, f.path
                    ),
                )
                .into());
            }
            if files[..i].iter().any(|g| g.path == f.path) {
                return Err(Invalid::new(
                    format!("files[{i}].path"),
                    format!("{} is named twice", f.path),
                )
                .into());
            }
        }
        let nodes: Vec<(i64, String)> = self
            .store
            .lb_nodes(unit_id)
            .await?
            .into_iter()
            .map(|n| {
                let label = super::node_label(
                    n.address.as_deref(),
                    n.account_name.as_deref(),
                    &super::merged(&unit.config, &n.settings),
                );
                (n.id, label)
            })
            .collect();
        if nodes.is_empty() {
            return Err(Invalid::new(
                "unit_id",
                format!("unit {} has no nodes to publish to", unit.name),
            )
            .into());
        }
        let (under_way, _) = self
            .store
            .list_releases(
                unit_id,
                crate::store::Window {
                    limit: 1,
                    offset: 0,
                },
            )
            .await?;
        if let Some(r) = under_way
            .iter()
            .find(|r| matches!(r.state.as_str(), "pending" | "running"))
        {
            return Err(Error::Conflict {
                field: "unit_id".into(),
                message: format!("release {} of this unit is still under way", r.id),
            });
        }
        let text = serde_json::to_string(&files).unwrap_or_default();
        let release = self
            .store
            .create_release(unit_id, &text, rollback_of, by, &nodes)
            .await?;
        let this = self.clone();
        let (id, by) = (release.id, by.to_owned());
        tokio::spawn(async move {
            if let Err(e) = this.run_release(id, &files, &by).await {
                tracing::warn!(release = id, "release failed: {e}");
                let _ = this.store.set_release_state(id, "failed", None).await;
            }
        });
        Ok(release)
    }

    /// Publishes the files of release `id` again, as a new release.
    pub async fn rollback(self: &Arc<Self>, id: i64, by: &str) -> Result<ReleaseRecord, Error> {
        let earlier = self.store.release(id).await?;
        let files: Vec<FileRef> = serde_json::from_str(&earlier.files).unwrap_or_default();
        self.publish(earlier.unit_id, Some(files), Some(id), by)
            .await
    }

    /// Publishes to each node in turn; the first failure leaves the rest
    /// as they are (a configuration one node refuses, the next would too).
    async fn run_release(&self, id: i64, refs: &[FileRef], by: &str) -> Result<(), Error> {
        let release = self.store.release(id).await?;
        let unit = self.store.lb_unit(release.unit_id).await?;
        self.store.set_release_state(id, "running", None).await?;
        let mut files = Vec::with_capacity(refs.len());
        for f in refs {
            let stored = self.store.config_file(unit.id, &f.path, f.version).await?;
            files.push(ConfigFile {
                path: stored.path,
                content: stored.content,
            });
        }
        let nodes = self.store.lb_nodes(unit.id).await?;
        let targets = self.store.push_targets(unit.group_id).await?;
        let (mut ok, mut succeeded, mut failed) = (Vec::new(), 0_usize, 0_usize);
        for node in self.store.release_nodes(id).await? {
            if failed > 0 {
                self.store
                    .set_release_node(id, node.node_id, "skipped", SKIPPED)
                    .await?;
                continue;
            }
            let Some(target) = targets.iter().find(|t| t.node_id == node.node_id) else {
                self.store
                    .set_release_node(id, node.node_id, "failed", "the node was removed")
                    .await?;
                failed += 1;
                continue;
            };
            self.store
                .set_release_node(id, node.node_id, "running", "publishing…")
                .await?;
            let outcome = self
                .on_node(target, async |plugin, id| {
                    plugin.publish(&files, id.as_deref()).await
                })
                .await;
            match outcome {
                Ok(log) => {
                    self.store
                        .set_release_node(id, node.node_id, "succeeded", &log)
                        .await?;
                    succeeded += 1;
                    // The publish command group runs on machines; a cloud
                    // load balancer has no shell to run it in.
                    if let Some(machine) = nodes
                        .iter()
                        .find(|n| n.id == node.node_id)
                        .and_then(|n| n.machine_id)
                    {
                        ok.push(machine);
                    }
                }
                Err(why) => {
                    self.store
                        .set_release_node(id, node.node_id, "failed", &why)
                        .await?;
                    failed += 1;
                }
            }
        }
        let execution = match unit.publish_group_id {
            Some(group) if !ok.is_empty() => {
                let input = ExecutionInput {
                    group_id: Some(group),
                    machine_ids: Some(ok.clone()),
                    command_id: None,
                    command: None,
                    params: Default::default(),
                    pool_id: None,
                    hosts: None,
                    forks: None,
                    timeout_secs: None,
                };
                match self
                    .remote
                    .start_titled(input, by, Some(&format!("after release {id}")))
                    .await
                {
                    Ok(execution) => Some(execution),
                    Err(e) => {
                        tracing::warn!(
                            release = id,
                            "the publish command group did not start: {e}"
                        );
                        None
                    }
                }
            }
            _ => None,
        };
        let state = match (succeeded, failed) {
            (_, 0) => "succeeded",
            (0, _) => "failed",
            _ => "partial",
        };
        self.store.set_release_state(id, state, execution).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_paths_stay_inside_the_configuration_directory() {
        for good in ["nginx.conf", "conf.d/gzip.conf", "sites/a_b-c.conf"] {
            assert!(file_path("path", good).is_ok(), "{good}");
        }
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/./b",
            "a b",
            "a;rm",
            "$(x)",
            "",
        ] {
            assert!(file_path("path", bad).is_err(), "{bad}");
        }
    }
}
