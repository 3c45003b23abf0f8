//! [`LoadBalancer`] for a [`WasmPlugin`] of the `load-balancer` world.

use async_trait::async_trait;

use super::{
    Applied, ConfigFile, Error, LoadBalancer, PluginInfo, Upstream, WasmPlugin, runtime::guest_call,
};

#[async_trait]
impl LoadBalancer for WasmPlugin {
    async fn describe(&self) -> Result<PluginInfo, Error> {
        guest_call!(self, balancer, "describe", |guest, store| async {
            guest.call_describe(&mut store).await.map(Ok)
        })
    }

    async fn validate_config(&self, config: &str) -> Result<(), Error> {
        let config = config.to_owned();
        guest_call!(self, balancer, "validate-config", |guest, store| guest
            .call_validate_config(&mut store, &config))
    }

    async fn apply_upstreams(
        &self,
        upstreams: &[Upstream],
        target: Option<&str>,
    ) -> Result<Applied, Error> {
        let (upstreams, target) = (upstreams.to_vec(), target.map(str::to_owned));
        guest_call!(self, balancer, "apply-upstreams", |guest, store| guest
            .call_apply_upstreams(&mut store, &upstreams, target.as_deref()))
    }

    async fn publish(&self, files: &[ConfigFile], target: Option<&str>) -> Result<Applied, Error> {
        let (files, target) = (files.to_vec(), target.map(str::to_owned));
        guest_call!(self, balancer, "publish", |guest, store| guest
            .call_publish(&mut store, &files, target.as_deref()))
    }
}
