//! Retention rules and the registry's clean-up: delete the tags the rules
//! do not keep, then collect the garbage (DCP's own registry) and report
//! the space freed.

use std::collections::{BTreeSet, HashMap};

use futures_util::{StreamExt as _, stream};
use time::{Duration as Span, OffsetDateTime, format_description::well_known::Rfc3339};

use super::{Error, FAN_OUT, Images, registry};
use crate::{
    store::{CleanupRecord, RetentionRecord},
    validate::{self, Invalid},
};

/// The most tags a rule may keep by count.
pub const KEEP_LAST_MAX: u32 = 10_000;
/// The most days a rule may keep tags for (100 years).
pub const KEEP_DAYS_MAX: u32 = 36_500;

/// A tag a clean-up deletes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Doomed {
    /// Its repository.
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// The manifest it points at.
    pub digest: String,
    /// When its image was built (RFC 3339).
    pub created: Option<String>,
}

/// One repository's part of a clean-up.
struct Planned {
    /// The tags its rule does not keep.
    doomed: Vec<Doomed>,
    /// Every tag, by the manifest it points at.
    by_digest: HashMap<String, BTreeSet<String>>,
}

/// One tag with its build time, for a rule to judge.
struct Dated {
    tag: String,
    digest: String,
    created: Option<OffsetDateTime>,
    created_text: Option<String>,
}

/// The tags of one repository that `keep_last` and `keep_days` do not
/// keep, given `now`. Newest first by build time, a tag is kept when it is
/// among the first `keep_last` or was built within `keep_days`; a tag
/// whose image has no build time (a list of platforms) is always kept.
fn doomed(
    mut tags: Vec<Dated>,
    keep_last: Option<u32>,
    keep_days: Option<u32>,
    now: OffsetDateTime,
) -> Vec<Dated> {
    tags.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.tag.cmp(&b.tag)));
    let since = keep_days.map(|d| now - Span::days(i64::from(d)));
    tags.into_iter()
        .enumerate()
        .filter(|(i, t)| {
            let Some(created) = t.created else {
                return false;
            };
            let by_count = keep_last.is_some_and(|n| *i < n as usize);
            let by_age = since.is_some_and(|since| created > since);
            !(by_count || by_age)
        })
        .map(|(_, t)| t)
        .collect()
}

impl Images {
    /// Sets the retention rule of `repository`.
    ///
    /// # Errors
    /// A bad name or rule, or the store failing.
    pub async fn set_retention(
        &self,
        repository: &str,
        keep_last: Option<u32>,
        keep_days: Option<u32>,
        actor: &str,
    ) -> Result<RetentionRecord, Error> {
        validate::repository("repository", repository)?;
        if keep_last.is_none() && keep_days.is_none() {
            return Err(Invalid::new(
                "keep_last",
                "a rule keeps the newest N tags (keep_last), the tags of the last D days (keep_days), or both",
            )
            .into());
        }
        if let Some(n) = keep_last.filter(|n| !(1..=KEEP_LAST_MAX).contains(n)) {
            return Err(Invalid::new(
                "keep_last",
                format!("must be 1–{KEEP_LAST_MAX} (found {n}); a rule keeps at least one tag"),
            )
            .into());
        }
        if let Some(d) = keep_days.filter(|d| !(1..=KEEP_DAYS_MAX).contains(d)) {
            return Err(Invalid::new(
                "keep_days",
                format!("must be 1–{KEEP_DAYS_MAX} (found {d})"),
            )
            .into());
        }
        Ok(self
            .store
            .set_retention(repository, keep_last, keep_days, actor)
            .await?)
    }

    /// The tags a clean-up would delete now, by repository.
    ///
    /// # Errors
    /// When the store or the registry fails.
    pub async fn plan(&self) -> Result<Vec<Doomed>, Error> {
        Ok(self
            .plan_repositories()
            .await?
            .into_iter()
            .flat_map(|r| r.doomed)
            .collect())
    }

    /// Per repository with a rule: the tags it does not keep, and every
    /// tag by the manifest it points at.
    async fn plan_repositories(&self) -> Result<Vec<Planned>, Error> {
        let client = self.registry().await?;
        let now = OffsetDateTime::now_utc();
        let mut out = Vec::new();
        for rule in self.store.all_retention().await? {
            let tags = match client.tags(&rule.repository).await {
                Ok(tags) => tags,
                // A rule for a repository not pushed yet, or gone.
                Err(registry::Error::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            let repository = rule.repository.as_str();
            let dated: Vec<Result<Dated, Error>> = stream::iter(tags)
                .map(|tag| async move {
                    let manifest = client.manifest(repository, &tag).await?;
                    let config = super::image_config(client, repository, &manifest).await?;
                    let created_text = config.and_then(|c| c.created);
                    Ok(Dated {
                        created: created_text
                            .as_deref()
                            .and_then(|c| OffsetDateTime::parse(c, &Rfc3339).ok()),
                        created_text,
                        digest: manifest.digest,
                        tag,
                    })
                })
                .buffered(FAN_OUT)
                .collect()
                .await;
            let dated = dated.into_iter().collect::<Result<Vec<_>, _>>()?;
            let mut by_digest: HashMap<String, BTreeSet<String>> = HashMap::new();
            for t in &dated {
                by_digest
                    .entry(t.digest.clone())
                    .or_default()
                    .insert(t.tag.clone());
            }
            let doomed = doomed(dated, rule.keep_last, rule.keep_days, now)
                .into_iter()
                .map(|d| Doomed {
                    repository: rule.repository.clone(),
                    tag: d.tag,
                    digest: d.digest,
                    created: d.created_text,
                })
                .collect();
            out.push(Planned { doomed, by_digest });
        }
        Ok(out)
    }

    /// Runs the rules: deletes the tags they do not keep, then (DCP's own
    /// registry) collects the garbage. One clean-up at a time; recorded
    /// with what it deleted and freed, also when it fails.
    ///
    /// # Errors
    /// [`Error::Busy`] while another runs; the store failing.
    pub async fn clean_up(&self, actor: &str) -> Result<CleanupRecord, Error> {
        let Ok(_one) = self.cleaning.try_lock() else {
            return Err(Error::Busy(
                "a clean-up is running; its result will be in the history".into(),
            ));
        };
        // Not configured, or not serving: nothing recorded.
        self.registry().await?;
        let record = self.store.start_cleanup(actor).await?;
        // What the whole clean-up frees: the deleted tags' links and
        // manifests, then the blobs the garbage collection takes.
        let before = match &self.managed {
            Some(managed) => managed.storage_bytes().await,
            None => 0,
        };
        let mut deleted = Vec::new();
        let outcome = self.delete_doomed(&mut deleted).await;
        let listed = serde_json::to_string(&deleted).unwrap_or_else(|_| "[]".into());
        let (state, freed, message) = match outcome {
            Err(e) => ("failed", None, e.to_string()),
            Ok(()) => match &self.managed {
                Some(managed) => match managed.collect_garbage().await {
                    Ok(blobs) => {
                        let bytes = before.saturating_sub(managed.storage_bytes().await);
                        ("succeeded", Some((blobs, bytes)), String::new())
                    }
                    Err(why) => ("failed", None, why),
                },
                None => (
                    "succeeded",
                    None,
                    "the external registry frees the deleted tags' space with its own garbage collection"
                        .to_owned(),
                ),
            },
        };
        tracing::info!(
            cleanup = record.id,
            state,
            deleted = deleted.len(),
            "registry clean-up"
        );
        Ok(self
            .store
            .finish_cleanup(
                record.id,
                state,
                &listed,
                freed.map_or(0, |f| f.0),
                freed.map_or(0, |f| f.1),
                &message,
            )
            .await?)
    }

    /// Deletes the planned tags, each alone (see [`Images::delete_tag`]),
    /// knowing from the plan which tags share a manifest rather than asking
    /// the registry about every tag again for each one. (A tag pushed onto
    /// a doomed tag's very image during the clean-up is not known; it goes
    /// with it.)
    async fn delete_doomed(&self, deleted: &mut Vec<Doomed>) -> Result<(), Error> {
        let client = self.registry().await?;
        for mut planned in self.plan_repositories().await? {
            for doomed in planned.doomed {
                let sharing = planned.by_digest.entry(doomed.digest.clone()).or_default();
                sharing.remove(&doomed.tag);
                let shared = !sharing.is_empty();
                match super::remove_tag(
                    client,
                    &doomed.repository,
                    &doomed.tag,
                    &doomed.digest,
                    shared,
                )
                .await
                {
                    // Deleted by someone else meanwhile: gone all the same.
                    Ok(()) | Err(Error::NotFound(_)) => deleted.push(doomed),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dated(tag: &str, days_ago: Option<i64>, now: OffsetDateTime) -> Dated {
        Dated {
            tag: tag.into(),
            digest: format!("sha256:{tag}"),
            created: days_ago.map(|d| now - Span::days(d)),
            created_text: None,
        }
    }

    fn names(tags: &[Dated]) -> Vec<&str> {
        tags.iter().map(|t| t.tag.as_str()).collect()
    }

    #[test]
    fn a_rule_keeps_the_newest_or_the_recent_and_never_an_undated_list() {
        let now = OffsetDateTime::now_utc();
        let tags = || {
            vec![
                dated("old", Some(30), now),
                dated("list", None, now),
                dated("new", Some(1), now),
                dated("mid", Some(10), now),
            ]
        };
        assert_eq!(names(&doomed(tags(), Some(1), None, now)), ["mid", "old"]);
        assert_eq!(names(&doomed(tags(), None, Some(7), now)), ["mid", "old"]);
        assert_eq!(names(&doomed(tags(), None, Some(20), now)), ["old"]);
        // Either keeps: the newest two, or the last 20 days.
        assert_eq!(names(&doomed(tags(), Some(2), Some(20), now)), ["old"]);
        assert!(doomed(tags(), Some(3), None, now).is_empty());
    }
}
