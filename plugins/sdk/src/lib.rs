//! Write DCP plugins in Rust.
//!
//! Each world of `dcp:plugin@0.1.0` has a module with its generated
//! bindings, its export macro and the same helpers:
//!
//! | world | module | export macro |
//! |---|---|---|
//! | `cloud-provider` | [`cloud`] | `export_cloud_provider!` |
//! | `cloud-provider-with-load-balancers` | `dcp_plugin_sdk_cloud_lb` (its own crate, plugins/sdk-cloud-lb) | `export_cloud_provider_with_load_balancers!` |
//! | `load-balancer` | [`balancer`] | `export_load_balancer!` |
//! | `remote-command` | [`command`] | `export_remote_command!` |
//!
//! ```ignore
//! use dcp_plugin_sdk::cloud::{self, exports::dcp::plugin::cloud::Guest, PluginError};
//! struct MyCloud;
//! impl Guest for MyCloud { /* … */ }
//! dcp_plugin_sdk::export_cloud_provider!(MyCloud with_types_in dcp_plugin_sdk::cloud);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release`; the result is
//! a component ready to upload (see plugins/README.md).

/// Helpers every world module gets; generated once per world because each
/// world's bindings have their own copies of the shared types. Exported for
/// the world whose bindings live in a crate of their own.
#[doc(hidden)]
#[macro_export]
macro_rules! helpers {
    () => {
        pub use self::dcp::plugin::{
            context, log,
            types::{ErrorKind, PluginError, PluginInfo},
        };

        impl PluginError {
            /// A failure of `kind` with `message`; retryable for
            /// throttling, unavailability and timeouts.
            pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
                Self {
                    retryable: matches!(
                        kind,
                        ErrorKind::Throttled | ErrorKind::Unavailable | ErrorKind::Timeout
                    ),
                    kind,
                    message: message.into(),
                    provider_code: None,
                    request_id: None,
                }
            }

            /// Bad input: a config or parameter the plugin cannot use.
            pub fn invalid_input(message: impl Into<String>) -> Self {
                Self::new(ErrorKind::InvalidInput, message)
            }

            /// The thing asked for does not exist.
            pub fn not_found(message: impl Into<String>) -> Self {
                Self::new(ErrorKind::NotFound, message)
            }

            /// The plugin does not do this.
            pub fn unsupported(message: impl Into<String>) -> Self {
                Self::new(ErrorKind::Unsupported, message)
            }

            /// Adds the provider's own error code and request id.
            #[must_use]
            pub fn with_provider(
                mut self,
                code: impl Into<String>,
                request_id: Option<String>,
            ) -> Self {
                self.provider_code = Some(code.into());
                self.request_id = request_id;
                self
            }
        }

        /// The plugin instance's configuration, parsed.
        pub fn config<T: serde::de::DeserializeOwned>() -> Result<T, PluginError> {
            parse_config(&context::config())
        }

        /// Parses a configuration document; errors name what is wrong.
        pub fn parse_config<T: serde::de::DeserializeOwned>(
            config: &str,
        ) -> Result<T, PluginError> {
            let config = if config.trim().is_empty() {
                "{}"
            } else {
                config
            };
            serde_json::from_str(config)
                .map_err(|e| PluginError::invalid_input(format!("configuration: {e}")))
        }

        /// Logs at info level with key/value fields.
        pub fn info(message: &str, fields: &[(&str, &str)]) {
            let fields: Vec<(String, String)> = fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            log::log(log::Level::Info, message, &fields);
        }
    };
}

/// The `cloud-provider` world.
#[allow(missing_docs, clippy::all)]
pub mod cloud {
    wit_bindgen::generate!({
        world: "cloud-provider",
        path: "../../wit/plugin",
        pub_export_macro: true,
        export_macro_name: "export_cloud_provider",
        default_bindings_module: "dcp_plugin_sdk::cloud",
    });
    helpers!();
    pub use self::dcp::plugin::{http, secrets};
}

/// The `load-balancer` world.
#[allow(missing_docs, clippy::all)]
pub mod balancer {
    wit_bindgen::generate!({
        world: "load-balancer",
        path: "../../wit/plugin",
        pub_export_macro: true,
        export_macro_name: "export_load_balancer",
        default_bindings_module: "dcp_plugin_sdk::balancer",
    });
    helpers!();
    pub use self::dcp::plugin::{http, secrets, ssh};
}

/// The `remote-command` world.
#[allow(missing_docs, clippy::all)]
pub mod command {
    wit_bindgen::generate!({
        world: "remote-command",
        path: "../../wit/plugin",
        pub_export_macro: true,
        export_macro_name: "export_remote_command",
        default_bindings_module: "dcp_plugin_sdk::command",
    });
    helpers!();
    pub use self::dcp::plugin::ssh;
}
