//! [`RemoteCommand`] for a plugin of the `remote-command` world.

use std::sync::Arc;

use async_trait::async_trait;

use super::{
    Error, Grants, ModuleInfo, Outcome, Plugin, PluginInfo, RemoteCommand, runtime::guest_call,
};

/// A remote-command plugin bound to the grants of one execution (its
/// targets and SSH channel).
#[derive(Debug, Clone)]
pub struct WasmRemoteCommand {
    plugin: Arc<Plugin>,
    grants: Arc<Grants>,
}

impl WasmRemoteCommand {
    /// Binds `plugin` to `grants`.
    #[must_use]
    pub fn new(plugin: Arc<Plugin>, grants: Grants) -> Self {
        Self {
            plugin,
            grants: Arc::new(grants),
        }
    }
}

#[async_trait]
impl RemoteCommand for WasmRemoteCommand {
    async fn describe(&self) -> Result<PluginInfo, Error> {
        guest_call!(self, command, "describe", |guest, store| async {
            guest.call_describe(&mut store).await.map(Ok)
        })
    }

    async fn modules(&self) -> Result<Vec<ModuleInfo>, Error> {
        guest_call!(self, command, "modules", |guest, store| async {
            guest.call_modules(&mut store).await.map(Ok)
        })
    }

    async fn plan(&self, module: &str, params: &str) -> Result<String, Error> {
        let (module, params) = (module.to_owned(), params.to_owned());
        guest_call!(self, command, "plan", |guest, store| guest
            .call_plan(&mut store, &module, &params))
    }

    async fn run(&self, module: &str, target: &str, params: &str) -> Result<Outcome, Error> {
        let (module, target, params) = (module.to_owned(), target.to_owned(), params.to_owned());
        guest_call!(self, command, "run", |guest, store| guest
            .call_run(&mut store, &module, &target, &params))
    }
}
