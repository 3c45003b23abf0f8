//! [`CloudLoadBalancers`] for a [`WasmPlugin`] of the `cloud-provider`
//! world that also exports `load-balancers`.

use async_trait::async_trait;

use super::{CloudLoadBalancers, Error, WasmPlugin, cloud_lb, runtime::guest_call};

#[async_trait]
impl CloudLoadBalancers for WasmPlugin {
    async fn list_load_balancers(
        &self,
        region: &str,
    ) -> Result<Vec<cloud_lb::LoadBalancer>, Error> {
        let region = region.to_owned();
        guest_call!(
            self,
            load_balancers,
            "list-load-balancers",
            |guest, store| guest.call_list_load_balancers(&mut store, &region)
        )
    }

    async fn describe_load_balancer(
        &self,
        region: &str,
        id: &str,
    ) -> Result<cloud_lb::LoadBalancerDetail, Error> {
        let (region, id) = (region.to_owned(), id.to_owned());
        guest_call!(
            self,
            load_balancers,
            "describe-load-balancer",
            |guest, store| guest.call_describe_load_balancer(&mut store, &region, &id)
        )
    }

    async fn create_load_balancer(
        &self,
        spec: &cloud_lb::LoadBalancerSpec,
        idempotency_key: &str,
    ) -> Result<cloud_lb::LoadBalancer, Error> {
        let (spec, key) = (spec.clone(), idempotency_key.to_owned());
        guest_call!(
            self,
            load_balancers,
            "create-load-balancer",
            |guest, store| guest.call_create_load_balancer(&mut store, &spec, &key)
        )
    }

    async fn delete_load_balancer(&self, region: &str, id: &str) -> Result<(), Error> {
        let (region, id) = (region.to_owned(), id.to_owned());
        guest_call!(
            self,
            load_balancers,
            "delete-load-balancer",
            |guest, store| guest.call_delete_load_balancer(&mut store, &region, &id)
        )
    }

    async fn set_load_balancer_status(
        &self,
        region: &str,
        id: &str,
        status: cloud_lb::LoadBalancerStatus,
    ) -> Result<(), Error> {
        let (region, id) = (region.to_owned(), id.to_owned());
        guest_call!(
            self,
            load_balancers,
            "set-load-balancer-status",
            |guest, store| guest.call_set_load_balancer_status(&mut store, &region, &id, status)
        )
    }

    async fn create_listener(
        &self,
        region: &str,
        id: &str,
        spec: &cloud_lb::ListenerSpec,
    ) -> Result<(), Error> {
        let (region, id, spec) = (region.to_owned(), id.to_owned(), spec.clone());
        guest_call!(self, load_balancers, "create-listener", |guest, store| {
            guest.call_create_listener(&mut store, &region, &id, &spec)
        })
    }

    async fn set_listener_running(
        &self,
        region: &str,
        id: &str,
        port: u16,
        running: bool,
    ) -> Result<(), Error> {
        let (region, id) = (region.to_owned(), id.to_owned());
        guest_call!(
            self,
            load_balancers,
            "set-listener-running",
            |guest, store| guest.call_set_listener_running(&mut store, &region, &id, port, running)
        )
    }

    async fn delete_listener(&self, region: &str, id: &str, port: u16) -> Result<(), Error> {
        let (region, id) = (region.to_owned(), id.to_owned());
        guest_call!(self, load_balancers, "delete-listener", |guest, store| {
            guest.call_delete_listener(&mut store, &region, &id, port)
        })
    }

    async fn set_white_list(
        &self,
        region: &str,
        id: &str,
        port: u16,
        enabled: bool,
        entries: &[String],
    ) -> Result<(), Error> {
        let (region, id, entries) = (region.to_owned(), id.to_owned(), entries.to_vec());
        guest_call!(self, load_balancers, "set-white-list", |guest, store| guest
            .call_set_white_list(
                &mut store, &region, &id, port, enabled, &entries
            ))
    }
}
