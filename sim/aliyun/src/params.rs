//! A request's parameters, merged from the query and the form body, with the
//! gateway's rules for reading them.
//!
//! Missing parameters follow one rule, the one Aliyun's layering implies:
//! a parameter the API declares required (`RegionId`, `InstanceId`, the
//! common parameters) is refused as `Missing{Name}` (reference §1.5), and a
//! parameter the API declares optional but this particular request needs
//! (RunInstances' `ImageId` when there is no launch template) is refused by
//! the action as `MissingParameter` naming it (ECS error tables).

use std::{collections::BTreeMap, str::FromStr};

use serde_json::{Map, Value, json};

use crate::{
    catalog::{self, Region},
    reply::ApiError,
};

/// Merged request parameters. Empty values are kept: they are signed.
#[derive(Clone, Debug, Default)]
pub(crate) struct Params {
    map: BTreeMap<String, String>,
}

impl Params {
    /// Later pairs win, so the body overrides the query as in Tea's merge.
    pub(crate) fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            map: pairs.into_iter().collect(),
        }
    }

    /// Every parameter, sorted by name.
    pub(crate) fn pairs(&self) -> Vec<(&str, &str)> {
        self.map
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// The raw value, empty or not.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }

    /// The value when present and not empty: an empty optional parameter
    /// means "not given" to every ECS action.
    pub(crate) fn value(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// A parameter the API declares required.
    pub(crate) fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.value(name).ok_or_else(|| ApiError::missing(name))
    }

    /// A parameter this request needs although the API declares it optional.
    pub(crate) fn needed(&self, name: &str) -> Result<&str, ApiError> {
        self.value(name)
            .ok_or_else(|| ApiError::missing_parameter(name))
    }

    /// An optional number; one that does not parse is `InvalidParameter`.
    pub(crate) fn number<T: FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        self.value(name)
            .map(|v| v.trim().parse().map_err(|_| ApiError::invalid(name)))
            .transpose()
    }

    /// An optional boolean (`true`/`false`, any case), false when absent.
    pub(crate) fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.value(name) {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(_) => Err(ApiError::invalid(name)),
        }
    }

    /// A JSON-array-of-strings parameter (`InstanceIds=["i-a","i-b"]`) of at
    /// most `max` items. `[]` is a filter that matches nothing, so it is
    /// `Some(empty)`, not `None`.
    pub(crate) fn json_list(
        &self,
        name: &str,
        max: usize,
    ) -> Result<Option<Vec<String>>, ApiError> {
        let Some(text) = self.value(name) else {
            return Ok(None);
        };
        let list: Vec<String> = serde_json::from_str(text).map_err(|_| ApiError::invalid(name))?;
        if list.len() > max {
            return Err(ApiError::invalid(name));
        }
        Ok(Some(list))
    }

    /// A repeated list `Name.1`, `Name.2`, … in index order.
    pub(crate) fn list(&self, name: &str) -> Result<Vec<&str>, ApiError> {
        Ok(self
            .records(name)?
            .into_values()
            .filter_map(|fields| fields.get("").copied())
            .collect())
    }

    /// Repeated structs `Name.N.Field` (and plain `Name.N` under the field
    /// `""`), by index. An index that is not a positive number is refused.
    pub(crate) fn records(
        &self,
        name: &str,
    ) -> Result<BTreeMap<usize, BTreeMap<&str, &str>>, ApiError> {
        let prefix = format!("{name}.");
        let mut records: BTreeMap<usize, BTreeMap<&str, &str>> = BTreeMap::new();
        for (key, value) in self.map.range(prefix.clone()..) {
            let Some(rest) = key.strip_prefix(&prefix) else {
                break;
            };
            let (index, field) = rest.split_once('.').unwrap_or((rest, ""));
            let index: usize = index.parse().map_err(|_| ApiError::invalid(key))?;
            if index == 0 {
                return Err(ApiError::invalid(key));
            }
            records
                .entry(index)
                .or_default()
                .insert(field, value.as_str());
        }
        Ok(records)
    }

    /// The required `RegionId`, which must be one of the simulated regions.
    pub(crate) fn region(&self) -> Result<&'static Region, ApiError> {
        catalog::region(self.required("RegionId")?).ok_or_else(ApiError::region_not_found)
    }

    /// `PageNumber` (from 1) and `PageSize` (default 10, at most 100).
    pub(crate) fn page(&self) -> Result<Page, ApiError> {
        let number = self.number::<usize>("PageNumber")?.unwrap_or(1);
        let size = self.number::<usize>("PageSize")?.unwrap_or(10);
        if number == 0 {
            return Err(ApiError::invalid("PageNumber"));
        }
        if size == 0 || size > Page::MAX_SIZE {
            return Err(ApiError::invalid("PageSize"));
        }
        Ok(Page { number, size })
    }
}

/// One page of a listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Page {
    pub(crate) number: usize,
    pub(crate) size: usize,
}

impl Page {
    /// The largest `PageSize` accepted. The ECS docs cap some listings
    /// (security groups, key pairs, VPCs) at 50; the contract DCP's plugin
    /// follows states 100, and refusing what the real API may only clamp
    /// would fail drivers for nothing.
    pub(crate) const MAX_SIZE: usize = 100;

    /// The paged answer: `TotalCount` of all `items`, this page of them
    /// under `{list: {item: [...]}}`, and the page asked for.
    pub(crate) fn answer(&self, list: &str, item: &str, items: Vec<Value>) -> Map<String, Value> {
        let total = items.len();
        let start = (self.number - 1).saturating_mul(self.size);
        let page: Vec<Value> = items.into_iter().skip(start).take(self.size).collect();
        let mut body = Map::new();
        body.insert("TotalCount".to_owned(), json!(total));
        body.insert("PageNumber".to_owned(), json!(self.number));
        body.insert("PageSize".to_owned(), json!(self.size));
        body.insert(list.to_owned(), json!({ item: page }));
        body
    }
}

/// Whether `name` matches a filter where `*` stands for any text (the
/// `InstanceName`/`KeyPairName` filters' fuzzy form).
pub(crate) fn matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Parameters from literal pairs, for unit tests.
#[cfg(test)]
pub(crate) fn params(pairs: &[(&str, &str)]) -> Params {
    Params::from_pairs(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_structs_group_by_index_in_numeric_order() {
        let p = params(&[
            ("Tag.10.Key", "k10"),
            ("Tag.2.Key", "k2"),
            ("Tag.2.Value", "v2"),
            ("InstanceId.2", "i-b"),
            ("InstanceId.1", "i-a"),
            ("InstanceIdX", "not part of it"),
        ]);
        let tags = p.records("Tag").unwrap();
        assert_eq!(tags.keys().copied().collect::<Vec<_>>(), vec![2, 10]);
        assert_eq!(tags[&2]["Value"], "v2");
        assert_eq!(p.list("InstanceId").unwrap(), vec!["i-a", "i-b"]);
        assert_eq!(
            params(&[("Tag.x.Key", "k")])
                .records("Tag")
                .unwrap_err()
                .code,
            "InvalidParameter"
        );
    }

    #[test]
    fn paging_is_exact_and_bounded() {
        let items: Vec<Value> = (0..25).map(|i| json!(i)).collect();
        let page = params(&[("PageNumber", "3"), ("PageSize", "10")])
            .page()
            .unwrap();
        let body = page.answer("Items", "Item", items);
        assert_eq!(body["TotalCount"], 25);
        assert_eq!(body["Items"]["Item"], json!([20, 21, 22, 23, 24]));
        assert_eq!(
            params(&[]).page().unwrap(),
            Page {
                number: 1,
                size: 10
            }
        );
        for bad in [
            ("PageSize", "101"),
            ("PageSize", "0"),
            ("PageNumber", "0"),
            ("PageSize", "x"),
        ] {
            let err = params(&[bad]).page().unwrap_err();
            assert_eq!(
                (err.status.as_u16(), err.code.as_str()),
                (400, "InvalidParameter"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn fuzzy_names() {
        assert!(matches("web", "web"));
        assert!(!matches("web", "web1"));
        assert!(matches("web*", "web-001"));
        assert!(matches("*001", "web-001"));
        assert!(matches("w*b*1", "web-001"));
        assert!(matches("*", ""));
        assert!(!matches("a*a", "a"));
        assert!(!matches("web*", "db-001"));
    }

    #[test]
    fn json_lists_distinguish_absent_from_empty() {
        assert_eq!(params(&[]).json_list("InstanceIds", 100).unwrap(), None);
        assert_eq!(
            params(&[("InstanceIds", "[]")])
                .json_list("InstanceIds", 100)
                .unwrap(),
            Some(vec![])
        );
        assert!(
            params(&[("InstanceIds", "i-a")])
                .json_list("InstanceIds", 100)
                .is_err()
        );
    }
}
