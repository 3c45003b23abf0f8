//! The one `bindgen!` of the host: Rust types and traits for the
//! `dcp:plugin@0.1.0` contract (`wit/plugin`), generated from the
//! `plugin-host` world that holds every import and export.

wasmtime::component::bindgen!({
    path: "../wit/plugin",
    world: "plugin-host",
    imports: { default: async },
    exports: { default: async },
    additional_derives: [PartialEq, Eq],
    with: {
        "dcp:plugin/secrets.credential": super::imports::Credential,
        "dcp:plugin/ssh.session": super::imports::SshSession,
    },
});
