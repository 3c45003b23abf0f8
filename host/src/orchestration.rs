//! Orchestration (OpenDCP's orion): clusters → services → pools → nodes.
//!
//! The rules live here, between the API and the store, so every caller —
//! the REST API today, the task engine later — goes through the same checks.

use dcp_api_types::ClusterInput;

use crate::{
    store::ClusterChange,
    validate::{self, Invalid},
};

/// Longest cluster name.
pub const CLUSTER_NAME_MAX: usize = 64;
/// Longest cluster description.
pub const DESCRIPTION_MAX: usize = 1024;
/// Longest business-line label.
pub const BUSINESS_LINE_MAX: usize = 64;

/// Checks a cluster's fields: name 1–64 characters of `[a-z0-9-_]`,
/// description ≤ 1024 characters, business line ≤ 64 characters.
pub fn cluster_change(input: ClusterInput) -> Result<ClusterChange, Invalid> {
    validate::identifier("name", &input.name, CLUSTER_NAME_MAX)?;
    validate::max_chars("description", &input.description, DESCRIPTION_MAX)?;
    validate::max_chars("business_line", &input.business_line, BUSINESS_LINE_MAX)?;
    Ok(ClusterChange {
        name: input.name,
        description: input.description,
        business_line: input.business_line.trim().to_owned(),
    })
}
