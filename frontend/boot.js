// Starts the wasm app. A file rather than an inline script, so the
// Content-Security-Policy can allow scripts from 'self' only.
import init from "/pkg/dcp.js";
init({ module_or_path: "/pkg/dcp_bg.wasm" });
