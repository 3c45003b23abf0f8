//! [`CloudProvider`] for a [`WasmPlugin`] of the `cloud-provider` world.

use async_trait::async_trait;

use super::{
    Choice, CloudProvider, Error, Instance, InstancePage, InstanceSpec, PluginInfo, WasmPlugin,
    runtime::guest_call,
};

#[async_trait]
impl CloudProvider for WasmPlugin {
    async fn describe(&self) -> Result<PluginInfo, Error> {
        guest_call!(self, cloud, "describe", |guest, store| async {
            guest.call_describe(&mut store).await.map(Ok)
        })
    }

    async fn validate_config(&self, config: &str) -> Result<(), Error> {
        let config = config.to_owned();
        guest_call!(self, cloud, "validate-config", |guest, store| guest
            .call_validate_config(&mut store, &config))
    }

    async fn list_regions(&self) -> Result<Vec<Choice>, Error> {
        guest_call!(self, cloud, "list-regions", |guest, store| guest
            .call_list_regions(&mut store))
    }

    async fn list_zones(&self, region: &str) -> Result<Vec<Choice>, Error> {
        let region = region.to_owned();
        guest_call!(self, cloud, "list-zones", |guest, store| guest
            .call_list_zones(&mut store, &region))
    }

    async fn list_vpcs(&self, region: &str) -> Result<Vec<Choice>, Error> {
        let region = region.to_owned();
        guest_call!(self, cloud, "list-vpcs", |guest, store| guest
            .call_list_vpcs(&mut store, &region))
    }

    async fn list_subnets(
        &self,
        region: &str,
        vpc: &str,
        zone: Option<&str>,
    ) -> Result<Vec<Choice>, Error> {
        let (region, vpc, zone) = (region.to_owned(), vpc.to_owned(), zone.map(str::to_owned));
        guest_call!(self, cloud, "list-subnets", |guest, store| guest
            .call_list_subnets(&mut store, &region, &vpc, zone.as_deref()))
    }

    async fn list_images(&self, region: &str) -> Result<Vec<Choice>, Error> {
        let region = region.to_owned();
        guest_call!(self, cloud, "list-images", |guest, store| guest
            .call_list_images(&mut store, &region))
    }

    async fn list_instance_types(
        &self,
        region: &str,
        zone: Option<&str>,
    ) -> Result<Vec<Choice>, Error> {
        let (region, zone) = (region.to_owned(), zone.map(str::to_owned));
        guest_call!(self, cloud, "list-instance-types", |guest, store| guest
            .call_list_instance_types(&mut store, &region, zone.as_deref()))
    }

    async fn list_security_groups(
        &self,
        region: &str,
        vpc: Option<&str>,
    ) -> Result<Vec<Choice>, Error> {
        let (region, vpc) = (region.to_owned(), vpc.map(str::to_owned));
        guest_call!(self, cloud, "list-security-groups", |guest, store| guest
            .call_list_security_groups(&mut store, &region, vpc.as_deref()))
    }

    async fn list_disk_categories(&self, region: &str, zone: &str) -> Result<Vec<Choice>, Error> {
        let (region, zone) = (region.to_owned(), zone.to_owned());
        guest_call!(self, cloud, "list-disk-categories", |guest, store| guest
            .call_list_disk_categories(&mut store, &region, &zone))
    }

    async fn list_charge_types(&self) -> Result<Vec<Choice>, Error> {
        guest_call!(self, cloud, "list-charge-types", |guest, store| guest
            .call_list_charge_types(&mut store))
    }

    async fn create_instances(
        &self,
        spec: &InstanceSpec,
        count: u32,
        idempotency_key: &str,
    ) -> Result<Vec<String>, Error> {
        let (spec, key) = (spec.clone(), idempotency_key.to_owned());
        guest_call!(self, cloud, "create-instances", |guest, store| guest
            .call_create_instances(&mut store, &spec, count, &key))
    }

    async fn get_instance(&self, region: &str, id: &str) -> Result<Instance, Error> {
        let (region, id) = (region.to_owned(), id.to_owned());
        guest_call!(self, cloud, "get-instance", |guest, store| guest
            .call_get_instance(&mut store, &region, &id))
    }

    async fn list_instances(
        &self,
        region: &str,
        page: Option<&str>,
        page_size: u32,
    ) -> Result<InstancePage, Error> {
        let (region, page) = (region.to_owned(), page.map(str::to_owned));
        guest_call!(self, cloud, "list-instances", |guest, store| guest
            .call_list_instances(
                &mut store,
                &region,
                page.as_deref(),
                page_size
            ))
    }

    async fn start_instance(&self, region: &str, id: &str) -> Result<(), Error> {
        let (region, id) = (region.to_owned(), id.to_owned());
        guest_call!(self, cloud, "start-instance", |guest, store| guest
            .call_start_instance(&mut store, &region, &id))
    }

    async fn stop_instance(&self, region: &str, id: &str, force: bool) -> Result<(), Error> {
        let (region, id) = (region.to_owned(), id.to_owned());
        guest_call!(self, cloud, "stop-instance", |guest, store| guest
            .call_stop_instance(&mut store, &region, &id, force))
    }

    async fn delete_instance(&self, region: &str, id: &str) -> Result<(), Error> {
        let (region, id) = (region.to_owned(), id.to_owned());
        guest_call!(self, cloud, "delete-instance", |guest, store| guest
            .call_delete_instance(&mut store, &region, &id))
    }

    async fn allocate_public_ip(&self, region: &str, id: &str) -> Result<String, Error> {
        let (region, id) = (region.to_owned(), id.to_owned());
        guest_call!(self, cloud, "allocate-public-ip", |guest, store| guest
            .call_allocate_public_ip(&mut store, &region, &id))
    }
}
