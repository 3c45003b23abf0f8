//! The `cloud-provider-with-load-balancers` world of `dcp:plugin@0.1.0`: a
//! cloud provider that also shows and manages its accounts' own load
//! balancers (`cloud` and `load-balancers` exported together).
//!
//! A crate of its own because wit-bindgen defines each exported
//! interface's glue macro at the crate root: generated beside
//! `dcp_plugin_sdk::cloud`, which exports `cloud` too, the two would clash.
//!
//! ```ignore
//! use dcp_plugin_sdk_cloud_lb::exports::dcp::plugin::{cloud, load_balancers};
//! struct MyCloud;
//! impl cloud::Guest for MyCloud { /* … */ }
//! impl load_balancers::Guest for MyCloud { /* … */ }
//! dcp_plugin_sdk_cloud_lb::export_cloud_provider_with_load_balancers!(
//!     MyCloud with_types_in dcp_plugin_sdk_cloud_lb
//! );
//! ```

#![allow(missing_docs, clippy::all)]

wit_bindgen::generate!({
    world: "cloud-provider-with-load-balancers",
    path: "../../wit/plugin",
    pub_export_macro: true,
    export_macro_name: "export_cloud_provider_with_load_balancers",
    default_bindings_module: "dcp_plugin_sdk_cloud_lb",
});
dcp_plugin_sdk::helpers!();
pub use self::dcp::plugin::{http, secrets};
