//! [`LoadBalancer`] for a [`WasmPlugin`] of the `load-balancer` world.

use async_trait::async_trait;

use super::{Backend, Error, LoadBalancer, PluginInfo, WasmPlugin, runtime::guest_call};

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

    async fn register(
        &self,
        target: &str,
        backends: &[Backend],
        idempotency_key: &str,
    ) -> Result<(), Error> {
        let (target, backends, key) = (
            target.to_owned(),
            backends.to_vec(),
            idempotency_key.to_owned(),
        );
        guest_call!(self, balancer, "register", |guest, store| guest
            .call_register(&mut store, &target, &backends, &key))
    }

    async fn unregister(
        &self,
        target: &str,
        backends: &[Backend],
        idempotency_key: &str,
    ) -> Result<(), Error> {
        let (target, backends, key) = (
            target.to_owned(),
            backends.to_vec(),
            idempotency_key.to_owned(),
        );
        guest_call!(self, balancer, "unregister", |guest, store| guest
            .call_unregister(&mut store, &target, &backends, &key))
    }

    async fn list_backends(&self, target: &str) -> Result<Vec<Backend>, Error> {
        let target = target.to_owned();
        guest_call!(self, balancer, "list-backends", |guest, store| guest
            .call_list_backends(&mut store, &target))
    }

    async fn check_state(&self, target: &str) -> Result<String, Error> {
        let target = target.to_owned();
        guest_call!(self, balancer, "check-state", |guest, store| guest
            .call_check_state(&mut store, &target))
    }
}
