//! [`RemoteCommand`] for a [`WasmPlugin`] of the `remote-command` world.

use async_trait::async_trait;

use super::{
    Error, ModuleInfo, Outcome, PluginInfo, RemoteCommand, WasmPlugin, runtime::guest_call,
};

#[async_trait]
impl RemoteCommand for WasmPlugin {
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
