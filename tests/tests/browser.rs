//! The web UI in headless Chromium (Debian's, driven over WebDriver by
//! chromedriver): log in, create a cluster, see it listed, see the server's
//! validation error next to the field, and make an API token that works.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use dcp_tests::{
    Server, ServerOptions,
    browser::{Driver, browser},
};
use fantoccini::{Client, Locator};
use serde_json::{Value, json};

/// How long a page may take to show what a test waits for: the bound
/// on a loaded CI machine, not a pause (every wait ends when it shows).
const WAIT: Duration = Duration::from_secs(30);

/// The element `locator` finds, once it shows; panics after `within` with
/// the page it was on and what that page showed, so a failure says why.
async fn element(
    c: &Client,
    locator: Locator<'_>,
    within: Duration,
) -> fantoccini::elements::Element {
    let wanted = format!("{locator:?}");
    match c.wait().at_most(within).for_element(locator).await {
        Ok(found) => found,
        Err(e) => {
            let url = c.current_url().await.map(|u| u.to_string());
            let shown = match c.find(Locator::Css("body")).await {
                Ok(body) => body.text().await.unwrap_or_default(),
                Err(e) => format!("(no body: {e})"),
            };
            let shown: String = shown.chars().take(2000).collect();
            let source = c.source().await.unwrap_or_default();
            let source: String = source.chars().take(6000).collect();
            panic!(
                "{wanted} did not show within {within:?} ({e}) on {url:?}, which showed:\n{shown}\n\
                 its HTML:\n{source}"
            );
        }
    }
}

/// A browser logged in to `server` as admin.
async fn logged_in(server: &Server, password: &str) -> (Client, Driver) {
    let (c, driver) = browser().await;
    c.goto(&server.url("/login")).await.unwrap();
    fill(&c, "#login-username", "admin").await;
    fill(&c, "#login-password", password).await;
    click(&c, "#login-submit").await;
    // Signed in once the app's navigation shows: a page asked for sooner
    // would find no session yet and go back to the login.
    element(&c, Locator::Css("nav"), WAIT).await;
    (c, driver)
}

async fn fill(c: &Client, css: &str, text: &str) {
    let field = element(c, Locator::Css(css), WAIT).await;
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn click(c: &Client, css: &str) {
    // A live page may redraw the element between finding and clicking it:
    // then it is found again.
    let deadline = Instant::now() + WAIT;
    loop {
        let element = element(c, Locator::Css(css), WAIT).await;
        match element.click().await {
            Ok(()) => return,
            Err(e) if stale(&e) && Instant::now() < deadline => {}
            Err(e) => panic!("clicking {css}: {e}"),
        }
    }
}

async fn text_of(c: &Client, css: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let element = element(c, Locator::Css(css), WAIT).await;
        match element.text().await {
            Ok(text) => return text,
            Err(e) if stale(&e) && Instant::now() < deadline => {}
            Err(e) => panic!("reading {css}: {e}"),
        }
    }
}

/// Whether `e` says the element was redrawn since it was found.
fn stale(e: &fantoccini::error::CmdError) -> bool {
    matches!(e, fantoccini::error::CmdError::Standard(w)
        if w.error == fantoccini::error::ErrorStatus::StaleElementReference)
}

/// Waits until nothing matches `css`.
async fn gone(c: &Client, css: &str) {
    let deadline = Instant::now() + WAIT;
    while !c.find_all(Locator::Css(css)).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "{css} is still there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn log_in_create_a_cluster_and_see_validation_errors() {
    let ui = std::env::var("DCP_UI_DIR").expect("DCP_UI_DIR: build the UI with scripts/build-ui");
    assert!(
        std::path::Path::new(&ui).join("index.html").is_file(),
        "no UI in {ui}"
    );
    let server = Server::start(&ServerOptions::default());
    let password = server.printed_password.clone().unwrap();
    let (c, _driver) = browser().await;

    // Not logged in: the app sends us to the login page.
    c.goto(&server.url("/")).await.unwrap();
    fill(&c, "#login-username", "admin").await;
    fill(&c, "#login-password", "not-it").await;
    click(&c, "#login-submit").await;
    assert!(
        text_of(&c, ".banner.error")
            .await
            .contains("wrong user name or password")
    );
    fill(&c, "#login-password", &password).await;
    click(&c, "#login-submit").await;
    // Logging in lands on the overview.
    text_of(&c, "#overview-fleet").await;
    click(&c, "nav a[href=\"/clusters\"]").await;

    // Create a cluster through the dialog; it shows up in the table.
    click(&c, "#new-cluster").await;
    fill(&c, "#cluster-name", "checkout").await;
    fill(&c, "#cluster-business-line", "payments").await;
    fill(&c, "#cluster-description", "Checkout and billing").await;
    click(&c, "#cluster-save").await;
    let row = text_of(&c, "#clusters-table tr[data-name=\"checkout\"]").await;
    assert!(
        row.contains("payments") && row.contains("Checkout and billing"),
        "{row}"
    );

    // The same name again: the server's 409 appears next to the name field.
    click(&c, "#new-cluster").await;
    fill(&c, "#cluster-name", "checkout").await;
    click(&c, "#cluster-save").await;
    let error = text_of(&c, ".field-error[data-field=\"name\"]").await;
    assert!(error.contains("already taken"), "{error}");
    // And a rule the server enforces: only lowercase names.
    fill(&c, "#cluster-name", "Check Out").await;
    click(&c, "#cluster-save").await;
    element(
        &c,
        Locator::XPath("//p[@data-field='name'][contains(., 'lowercase')]"),
        WAIT,
    )
    .await;
    let shot = c.screenshot().await.unwrap();
    let _ = std::fs::write(std::env::temp_dir().join("dcp-clusters.png"), shot);
    click(&c, "#cluster-form button.cancel").await;

    // Edit: the dialog opens filled in; the change shows in the table.
    click(&c, "tr[data-name=\"checkout\"] button.edit").await;
    let name = c
        .find(Locator::Css("#cluster-name"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("checkout"));
    fill(&c, "#cluster-description", "Payments checkout").await;
    click(&c, "#cluster-save").await;
    element(
        &c,
        Locator::XPath("//tr[@data-name='checkout']/td[contains(., 'Payments checkout')]"),
        WAIT,
    )
    .await;

    // Delete asks first, then the row goes.
    click(&c, "#new-cluster").await;
    fill(&c, "#cluster-name", "scratch").await;
    click(&c, "#cluster-save").await;
    click(&c, "tr[data-name=\"scratch\"] button.delete").await;
    assert!(
        text_of(&c, ".dialog")
            .await
            .contains("Delete cluster scratch?")
    );
    click(&c, "#confirm-delete").await;
    gone(&c, "tr[data-name=\"scratch\"]").await;
    assert!(
        c.find(Locator::Css("tr[data-name=\"checkout\"]"))
            .await
            .is_ok()
    );

    // An API token made in the UI lists clusters from a script.
    c.goto(&server.url("/tokens")).await.unwrap();
    fill(&c, "#token-name", "from-ui").await;
    click(&c, "#token-create").await;
    let token = element(&c, Locator::Css("#new-token"), WAIT)
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert!(token.starts_with("dcp_"), "{token}");
    let listed: Value = reqwest::Client::new()
        .get(server.url("/api/v1/clusters"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["name"], "checkout", "{listed}");
    assert_eq!(listed["total"], 1, "{listed}");

    // The browsable API docs render the OpenAPI document.
    c.goto(&server.url("/api/docs")).await.unwrap();
    let title = text_of(&c, ".swagger-ui .info .title").await;
    assert!(title.contains("DCP"), "{title}");
    // Every area is listed (closed); opening one shows its operations.
    for tag in ["session", "clusters", "discovery", "images", "overview"] {
        text_of(&c, &format!(".opblock-tag[data-tag=\"{tag}\"]")).await;
    }
    click(&c, ".opblock-tag[data-tag=\"clusters\"]").await;
    text_of(&c, "#operations-clusters-list_clusters").await;

    c.close().await.unwrap();
}

#[tokio::test]
async fn plugins_are_uploaded_approved_and_tried_in_the_ui() {
    let (wasm, manifest) = dcp_tests::out_of_tree_plugin("static-hosts");
    let files = tempfile::tempdir().unwrap();
    let (wasm_path, manifest_path) = (
        files.path().join("static_hosts.wasm"),
        files.path().join("plugin.toml"),
    );
    std::fs::write(&wasm_path, wasm).unwrap();
    std::fs::write(&manifest_path, manifest).unwrap();

    let server = Server::start(&ServerOptions {
        admin_password: Some("ui-plugins-pw".into()),
        ..ServerOptions::default()
    });
    let (c, _driver) = logged_in(&server, "ui-plugins-pw").await;
    click(&c, "nav a[href=\"/plugins\"]").await;

    // Upload: the result names the version and waits for approval.
    element(&c, Locator::Css("#plugin-component"), WAIT)
        .await
        .send_keys(&wasm_path.display().to_string())
        .await
        .unwrap();
    c.find(Locator::Css("#plugin-manifest"))
        .await
        .unwrap()
        .send_keys(&manifest_path.display().to_string())
        .await
        .unwrap();
    click(&c, "#plugin-upload-submit").await;
    assert!(
        text_of(&c, "#upload-result")
            .await
            .contains("static-hosts@0.1.0 uploaded")
    );
    let row = "tr[data-name=\"static-hosts@0.1.0\"]";
    assert!(text_of(&c, row).await.contains("pending"));

    // Approve, then activate from the table.
    click(&c, "#upload-result button.approve").await;
    click(&c, &format!("{row} button.activate")).await;
    element(
        &c,
        Locator::XPath(
            "//tr[@data-name='static-hosts@0.1.0']//span[contains(@class,'status') and .='active']",
        ),
        WAIT,
    )
    .await;

    // Try it with a configuration entered in the form made from its schema.
    click(&c, &format!("{row} a.details")).await;
    fill(
        &c,
        "#config-hosts",
        r#"[{"id": "web-1", "address": "127.20.0.5"}]"#,
    )
    .await;
    click(&c, "#plugin-try-run").await;
    let answer = text_of(&c, "#plugin-try-result").await;
    assert!(
        answer.contains("static-hosts") && answer.contains("web-1"),
        "{answer}"
    );
    // Override a per-call limit from the same dialog.
    fill(&c, "#limit-timeout_secs", "5").await;
    click(&c, "#plugin-limits-save").await;
    element(
        &c,
        Locator::XPath("//dd[@id='plugin-limits'][starts-with(., '5 s,')]"),
        WAIT,
    )
    .await;
    let shot = c.screenshot().await.unwrap();
    let _ = std::fs::write(std::env::temp_dir().join("dcp-plugins.png"), shot);
    c.close().await.unwrap();
}

#[tokio::test]
async fn commands_are_written_run_on_a_fleet_and_followed_live_in_the_ui() {
    let fleet = dcp_tests::fleet::Fleet::start(3);
    let server = Server::start(&ServerOptions {
        admin_password: Some("ui-remote-pw".into()),
        env: vec![(
            "DCP_SSH_KEY_FILE".into(),
            fleet.key_path().display().to_string(),
        )],
        ..ServerOptions::default()
    });
    let (c, _driver) = logged_in(&server, "ui-remote-pw").await;
    click(&c, "nav a[href=\"/commands\"]").await;

    // A command with a placeholder nobody defined: the server's 422 shows
    // under the script; defining the parameter fixes it.
    click(&c, "#new-command").await;
    fill(&c, "#command-name", "greet").await;
    fill(&c, "#command-script", "echo hello {{who}}").await;
    click(&c, "#command-save").await;
    let error = text_of(&c, ".field-error[data-field=\"script\"]").await;
    assert!(error.contains("{{who}}"), "{error}");
    click(&c, "#add-param").await;
    fill(&c, ".param-row .param-name", "who").await;
    click(&c, ".param-row .param-required").await;
    click(&c, "#command-save").await;
    let row = text_of(&c, "#commands-table tr[data-name=\"greet\"]").await;
    assert!(row.contains("shell") && row.contains("who"), "{row}");

    // Run it on the fleet with DCP's key; the execution page follows it live.
    click(&c, "tr[data-name=\"greet\"] button.run").await;
    let hosts: Vec<String> = fleet.hosts.iter().map(|h| h.ip().to_string()).collect();
    fill(&c, "#run-hosts", &hosts.join("\n")).await;
    fill(&c, "#param-who", "world; rm -rf /").await;
    click(&c, "#run-start").await;
    element(
        &c,
        Locator::XPath("//span[@id='execution-state'][contains(., 'succeeded')]"),
        Duration::from_secs(30),
    )
    .await;
    let counts = text_of(&c, "#execution-counts").await;
    assert!(counts.contains("3 ok of 3 hosts"), "{counts}");
    click(
        &c,
        &format!("tr[data-address=\"{}\"] button.logs", hosts[0]),
    )
    .await;
    let stdout = text_of(&c, "pre.stdout").await;
    assert_eq!(stdout.trim(), "hello world; rm -rf /");
    let shot = c.screenshot().await.unwrap();
    let _ = std::fs::write(std::env::temp_dir().join("dcp-execution.png"), shot);

    // The history lists it; a group of the command can be made and listed.
    click(&c, "nav a[href=\"/executions\"]").await;
    let listed = text_of(&c, "#executions-table tbody tr").await;
    assert!(
        listed.contains("greet") && listed.contains("succeeded"),
        "{listed}"
    );
    click(&c, "nav a[href=\"/command-groups\"]").await;
    click(&c, "#new-group").await;
    fill(&c, "#group-name", "greetings").await;
    element(
        &c,
        Locator::XPath("//select[@id='group-add']/option[. = 'greet']"),
        WAIT,
    )
    .await
    .click()
    .await
    .unwrap();
    assert!(text_of(&c, "#group-steps").await.contains("greet"));
    click(&c, "#group-save").await;
    let row = text_of(&c, "#groups-table tr[data-name=\"greetings\"]").await;
    assert!(row.contains("greet") && row.contains("who"), "{row}");

    // The hosts' keys were trusted on first use; one can be forgotten.
    click(&c, "nav a[href=\"/executions\"]").await;
    click(&c, "a[href=\"/host-keys\"]").await;
    let first = format!("{}:22", hosts[0]);
    let row = text_of(&c, &format!("tr[data-host=\"{first}\"]")).await;
    assert!(row.contains("SHA256:"), "{row}");
    click(&c, &format!("tr[data-host=\"{first}\"] button.forget")).await;
    gone(&c, &format!("tr[data-host=\"{first}\"]")).await;
    assert_eq!(
        c.find_all(Locator::Css("#host-keys-table tbody tr"))
            .await
            .unwrap()
            .len(),
        2
    );

    // The group keeps its command from deletion, and the dialog says why.
    click(&c, "nav a[href=\"/commands\"]").await;
    click(&c, "tr[data-name=\"greet\"] button.delete").await;
    click(&c, "#confirm-delete").await;
    let refusal = text_of(&c, ".dialog .banner.error").await;
    assert!(refusal.contains("command group greetings"), "{refusal}");
}

#[tokio::test]
async fn a_command_is_defined_in_the_dialog_and_run_errors_land_on_their_inputs() {
    let server = Server::start(&ServerOptions {
        admin_password: Some("ui-commands-pw".into()),
        ..ServerOptions::default()
    });
    let (c, _driver) = logged_in(&server, "ui-commands-pw").await;
    click(&c, "nav a[href=\"/commands\"]").await;

    // The server names a bad parameter by position; the message lands in
    // that row's cell.
    click(&c, "#new-command").await;
    fill(&c, "#command-name", "hello").await;
    click(&c, "#mode-shell").await;
    fill(&c, "#command-script", "echo {{greeting}}").await;
    click(&c, "#add-param").await;
    fill(&c, ".param-row .param-name", "Greeting").await;
    click(&c, ".param-row .param-required").await;
    click(&c, "#command-save").await;
    let error = text_of(&c, ".param-row .field-error[data-field=\"params[0].name\"]").await;
    assert!(error.contains("a-z"), "{error}");
    fill(&c, ".param-row .param-name", "greeting").await;
    click(&c, "#command-save").await;
    gone(&c, "#command-form").await;
    let row = text_of(&c, "#commands-table tr[data-name=\"hello\"]").await;
    assert!(row.contains("shell") && row.contains("greeting"), "{row}");

    // The run dialog asks for the required parameter; a bad host comes back
    // as `hosts[0].address` and shows under the hosts, by line.
    click(&c, "tr[data-name=\"hello\"] button.run").await;
    fill(&c, "#param-greeting", "hi").await;
    fill(&c, "#run-hosts", "root@bad host!").await;
    click(&c, "#run-start").await;
    let error = text_of(&c, "#run-form .field-error[data-field=\"hosts\"]").await;
    assert!(error.contains("line 1"), "{error}");
    click(&c, "#run-form button.cancel").await;
    gone(&c, "#run-form").await;

    click(&c, "nav a[href=\"/executions\"]").await;
    element(&c, Locator::XPath("//h1[. = 'Executions']"), WAIT).await;
    assert!(c.find(Locator::Css("#executions-table")).await.is_ok());
    c.close().await.unwrap();
}

/// Clicks the option of `select` whose text contains `text` (the select's
/// choices may still be loading from the cloud).
async fn choose(c: &Client, select: &str, text: &str) {
    element(
        c,
        Locator::XPath(&format!(
            "//select[@id='{select}']/option[contains(., '{text}')]"
        )),
        WAIT,
    )
    .await
    .click()
    .await
    .unwrap();
}

/// Clicks the first real choice of `select` (after its "Choose…" option).
async fn choose_first(c: &Client, select: &str) {
    element(
        c,
        Locator::XPath(&format!(
            "//select[@id='{select}'][not(@disabled)]/option[2]"
        )),
        WAIT,
    )
    .await
    .click()
    .await
    .unwrap();
}

/// Waits until an element matching the XPath `path` exists.
async fn until(c: &Client, path: &str, within: Duration) {
    element(c, Locator::XPath(path), within).await;
}

#[tokio::test]
async fn machines_are_templated_created_initialised_and_released_in_the_ui() {
    let cloud = dcp_tests::cloud::Cloud::start(dcp_tests::cloud::quick_delays()).await;
    let server = &cloud.api.server;
    let password = server.printed_password.clone().unwrap();
    let (c, _driver) = logged_in(server, &password).await;

    // The account made through the API answers a real signed call.
    click(&c, "nav a[href=\"/accounts\"]").await;
    click(&c, "tr[data-name=\"sim\"] [data-test=\"account-check\"]").await;
    until(
        &c,
        "//*[@data-test='account-check-result'][contains(., 'OK:')]",
        WAIT,
    )
    .await;
    // Its configuration reads as the fields the plugin's schema describes,
    // not as JSON; a wrong value is refused under it, by the plugin.
    click(&c, "tr[data-name=\"sim\"] [data-test=\"account-edit\"]").await;
    let endpoint = element(&c, Locator::Css("#account-config-ecs_endpoint"), WAIT).await;
    assert!(
        endpoint
            .prop("value")
            .await
            .unwrap()
            .unwrap_or_default()
            .starts_with("http://127."),
        "the simulator's endpoint"
    );
    let timeout = c
        .find(Locator::Css("#account-config-timeout_ms"))
        .await
        .unwrap();
    assert_eq!(
        timeout.attr("placeholder").await.unwrap().as_deref(),
        Some("10000")
    );
    assert!(
        c.find_all(Locator::Css("textarea#account-config"))
            .await
            .unwrap()
            .is_empty()
    );
    fill(&c, "#account-config-timeout_ms", "5").await;
    click(&c, "#account-name").await;
    click(&c, "#account-save").await;
    let error = text_of(&c, ".field-error[data-field=\"config\"]").await;
    assert!(error.contains("timeout_ms"), "{error}");
    click(&c, "#account-form .cancel").await;

    // A template through the cascading form. The cloud fails the zone
    // look-up first: the form says so beside the select and retries.
    click(&c, "nav a[href=\"/machine-templates\"]").await;
    click(&c, "#new-template").await;
    fill(&c, "#template-name", "web-small").await;
    choose(&c, "template-account", "sim").await;
    choose(&c, "template-region", "cn-beijing").await;
    cloud.sim.set_faults(aliyun_sim::Faults {
        server_error_rate: 1.0,
        ..aliyun_sim::Faults::default()
    });
    choose(&c, "template-region", "cn-hangzhou").await;
    // The plugin retries 5xx with backoff until the call's deadline.
    until(
        &c,
        "//*[@data-test='lookup-error'][@data-lookup='zones'][contains(., 'Error') or contains(., 'Unavailable')]",
        Duration::from_secs(60),
    )
    .await;
    cloud.sim.set_faults(aliyun_sim::Faults::default());
    // Everything asked of the region during the outage failed; retry each.
    for retry in c
        .find_all(Locator::Css("[data-test=\"lookup-retry\"]"))
        .await
        .unwrap()
    {
        retry.click().await.unwrap();
    }
    choose(&c, "template-zone", "cn-hangzhou-h").await;
    choose_first(&c, "template-vpc").await;
    choose_first(&c, "template-subnet").await;
    choose_first(&c, "template-security-group").await;
    choose(&c, "template-instance-type", "ecs.g6.large").await;
    choose_first(&c, "template-image").await;
    choose(&c, "template-system-disk-category", "cloud_efficiency").await;
    fill(&c, "#template-quota-hours", "10").await;
    click(&c, "#template-save").await;
    let row = text_of(&c, "tr[data-name=\"web-small\"]").await;
    assert!(
        row.contains("cn-hangzhou-h") && row.contains("ecs.g6.large"),
        "{row}"
    );

    // Two machines through the dialog; both reach `ready` in the list.
    click(&c, "nav a[href=\"/machines\"]").await;
    click(&c, "#create-machines").await;
    choose(&c, "create-template", "web-small").await;
    let credit = text_of(&c, "[data-test=\"create-credit\"]").await;
    assert!(credit.contains("10"), "{credit}");
    fill(&c, "#create-count", "2").await;
    click(&c, "#create-submit").await;
    text_of(&c, "[data-test=\"machines-notice\"]").await;
    let ready =
        "//tr[@data-test='machine-row'][.//*[@data-test='machine-state'][contains(., 'ready')]]";
    let deadline = Instant::now() + Duration::from_secs(90);
    while c.find_all(Locator::XPath(ready)).await.unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "two machines never got ready");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    text_of(&c, "[data-test=\"fleet-chart\"]").await;
    let shot = c.screenshot().await.unwrap();
    let _ = std::fs::write(std::env::temp_dir().join("dcp-machines.png"), shot);

    // The machine page: its address on the simulator's loopback range, the
    // timeline through every state, the init output in its log, its key.
    click(&c, "[data-test=\"machine-link\"]").await;
    until(&c, "//*[@id='machine-state'][@data-state='ready']", WAIT).await;
    let address = text_of(&c, "[data-test=\"machine-address\"]").await;
    assert!(address.contains("@127.21."), "{address}");
    let timeline = text_of(&c, "[data-test=\"machine-timeline\"]").await;
    for state in ["creating", "starting", "initializing", "ready"] {
        assert!(timeline.contains(state), "{state} missing from {timeline}");
    }
    until(
        &c,
        "//*[@id='machine-log'][contains(., 'create-instances')]",
        WAIT,
    )
    .await;
    let href = c
        .find(Locator::Css("[data-test=\"download-key\"]"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let key = cloud
        .api
        .http
        .get(server.url(&href))
        .bearer_auth(&cloud.api.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(key.contains("PRIVATE KEY"), "{key}");

    // Release it: the cloud instance goes and an hour is charged.
    click(&c, "#delete-machine").await;
    click(&c, "#confirm-delete").await;
    until(
        &c,
        "//*[@id='machine-state'][@data-state='deleted']",
        Duration::from_secs(30),
    )
    .await;
    click(&c, "nav a[href=\"/quotas\"]").await;
    until(
        &c,
        "//tr[@data-template='web-small']/td[@data-test='quota-used'][. = '1']",
        WAIT,
    )
    .await;

    // Out of credit: the dialog says so and creating is refused.
    click(
        &c,
        "tr[data-template=\"web-small\"] [data-test=\"set-quota\"]",
    )
    .await;
    fill(&c, "[data-test=\"quota-input\"]", "1").await;
    click(&c, "[data-test=\"quota-save\"]").await;
    text_of(
        &c,
        "tr[data-template=\"web-small\"] [data-test=\"quota-exhausted\"]",
    )
    .await;
    click(&c, "nav a[href=\"/machines\"]").await;
    click(&c, "#create-machines").await;
    choose(&c, "create-template", "web-small").await;
    until(
        &c,
        "//*[@data-test='create-credit'][contains(@class, 'error-text')]",
        WAIT,
    )
    .await;
    c.close().await.unwrap();
}

#[tokio::test]
async fn a_service_is_defined_its_pool_expanded_and_shrunk_live_in_the_ui() {
    let _containers = dcp_tests::docker::Cleanup::new("web-ui");
    let image = dcp_tests::docker::web_image("1");
    let cloud = dcp_tests::cloud::Cloud::start(dcp_tests::cloud::quick_delays()).await;
    cloud.template("web-vm", None, json!({})).await;
    let (status, cluster) = cloud
        .api
        .post("/api/v1/clusters", &json!({"name": "shop"}))
        .await;
    assert_eq!(status, 201, "{cluster}");
    let server = &cloud.api.server;
    let password = server.printed_password.clone().unwrap();
    let (c, _driver) = logged_in(server, &password).await;

    // A service with its image and port, then a pool growing from the template.
    click(&c, "nav a[href=\"/services\"]").await;
    click(&c, "#new-service").await;
    choose(&c, "service-cluster", "shop").await;
    // Two broken fields: both are named at once, each under its input.
    fill(&c, "#service-name", "Web UI").await;
    fill(&c, "#service-image", "http://x/y").await;
    click(&c, "#service-save").await;
    let name_error = text_of(&c, ".field-error[data-field=\"name\"]").await;
    let image_error = text_of(&c, ".field-error[data-field=\"image\"]").await;
    assert!(
        !name_error.is_empty() && !image_error.is_empty(),
        "{name_error} / {image_error}"
    );
    assert!(
        c.find_all(Locator::Css(".banner.error"))
            .await
            .unwrap()
            .is_empty(),
        "nothing left for the banner"
    );
    fill(&c, "#service-name", "web-ui").await;
    fill(&c, "#service-image", &image).await;
    fill(&c, "#service-ports", "8080:http").await;
    click(&c, "#service-save").await;
    let error = text_of(&c, ".field-error[data-field=\"container.ports\"]").await;
    assert!(error.contains("8080:http"), "{error}");
    let ports = format!("{}:80", dcp_tests::web_port());
    fill(&c, "#service-ports", &ports).await;
    fill(&c, "#service-volumes", "/tmp/dcp-web-ui:/www-extra:ro").await;
    // A health check: GET /healthz on the first published port, every second.
    choose(&c, "service-health", "HTTP GET").await;
    fill(&c, "#service-health-path", "/healthz").await;
    fill(&c, "#service-health-interval", "1").await;
    click(&c, "#service-save").await;
    let row = text_of(&c, "tr[data-name=\"web-ui\"]").await;
    assert!(
        row.contains(&ports) && row.contains("dcp-test/web:1"),
        "{row}"
    );
    // Nothing was deployed yet: nothing to roll back to.
    assert!(!row.contains("Roll back"), "{row}");
    let saved = cloud.api.get("/api/v1/services").await;
    assert_eq!(
        saved["items"][0]["container"]["volumes"],
        json!([{"host_path": "/tmp/dcp-web-ui", "container_path": "/www-extra", "read_only": true}]),
        "{saved}"
    );
    assert_eq!(
        saved["items"][0]["container"]["health_check"],
        json!({"probe": {"http": {"path": "/healthz", "port": 80}},
               "interval_secs": 1, "timeout_secs": 3, "retries": 3, "start_period_secs": 0}),
        "{saved}"
    );
    click(&c, "tr[data-name=\"web-ui\"] [data-test=\"new-pool\"]").await;
    fill(&c, "#pool-name", "web-ui-a").await;
    choose(&c, "pool-template", "web-vm").await;
    click(&c, "#pool-save").await;
    click(&c, "[data-test=\"pool-link\"][data-name=\"web-ui-a\"]").await;

    // Expand by 2: the task page follows every node through its steps.
    click(&c, "#expand-pool").await;
    fill(&c, "#task-count", "2").await;
    click(&c, "#task-start").await;
    until(
        &c,
        "//*[@id='task-state']/span[@data-state='succeeded']",
        Duration::from_secs(120),
    )
    .await;
    let cells = c
        .find_all(Locator::Css(
            "[data-test=\"task-cell\"][data-state=\"succeeded\"]",
        ))
        .await
        .unwrap();
    assert_eq!(cells.len(), 4, "2 nodes × create_vm, start_service");
    assert!(text_of(&c, "#task-counts").await.contains("2 ok"));
    click(
        &c,
        "[data-test=\"task-cell\"][data-node=\"0\"][data-step=\"1\"]",
    )
    .await;
    let output = text_of(&c, "#step-output").await;
    assert!(output.contains("started dcp-web-ui-"), "{output}");
    assert!(output.contains("is healthy (GET http://"), "{output}");
    let shot = c.screenshot().await.unwrap();
    let _ = std::fs::write(std::env::temp_dir().join("dcp-task.png"), shot);

    // The pool lists both nodes running; their pages answer.
    click(&c, "h1 a").await;
    let deadline = Instant::now() + WAIT;
    let rows = loop {
        let rows = c
            .find_all(Locator::Css(
                "[data-test=\"node-row\"][data-state=\"running\"]",
            ))
            .await
            .unwrap();
        if rows.len() == 2 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(rows.len(), 2);
    let address = rows[0].attr("data-address").await.unwrap().unwrap();
    let page = web_page(&address).await;
    assert_eq!(page, "web 1\n");

    // Tag 2 deployed (by the API), the services page offers to roll back
    // to 1; confirmed, the deploy's task page follows it to the end.
    let _ = dcp_tests::docker::web_image("2");
    let pools = cloud.api.get("/api/v1/pools").await;
    let pool_id = &pools["items"][0]["id"];
    let (status, deploy) = cloud
        .api
        .post(
            "/api/v1/tasks",
            &json!({"kind": "deploy", "pool_id": pool_id, "tag": "2"}),
        )
        .await;
    assert_eq!(status, 202, "{deploy}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let task = cloud
            .api
            .get(&format!("/api/v1/tasks/{}", deploy["id"]))
            .await;
        if task["task"]["state"] == "succeeded" {
            break;
        }
        assert!(
            Instant::now() < deadline && task["task"]["state"] != "failed",
            "{task:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    click(&c, "nav a[href=\"/services\"]").await;
    click(&c, "tr[data-name=\"web-ui\"] [data-test=\"rollback\"]").await;
    let what = text_of(&c, "#rollback-dialog").await;
    assert!(what.contains("Deploy tag 1 of web-ui"), "{what}");
    click(&c, "#rollback-confirm").await;
    until(
        &c,
        "//*[@id='task-state']/span[@data-state='succeeded']",
        Duration::from_secs(120),
    )
    .await;
    let page = web_page(&address).await;
    assert_eq!(page, "web 1\n");
    click(&c, "h1 a").await;

    // The node's container: running tag 1, healthy, its log (the checks'
    // requests) shown and followed.
    click(
        &c,
        &format!("tr[data-address=\"{address}\"] .show-container"),
    )
    .await;
    text_of(&c, "#container-status[data-state=\"running\"]").await;
    assert_eq!(text_of(&c, "#container-tag").await, "1");
    assert!(
        text_of(&c, "#container-health")
            .await
            .starts_with("healthy")
    );
    until(
        &c,
        "//pre[@id='container-log'][contains(., 'response:200')]",
        WAIT,
    )
    .await;
    click(&c, "#container-close").await;
    gone(&c, "#container-dialog").await;

    // The service's page: every node's tag, and a rollback back to 2; its
    // cluster's page lists it.
    click(&c, "#pool-service").await;
    assert_eq!(
        text_of(
            &c,
            &format!("tr[data-test=\"service-node\"][data-address=\"{address}\"] .tag")
        )
        .await,
        "1"
    );
    assert_eq!(text_of(&c, "#service-rollback").await, "Roll back to 2");
    click(&c, ".subtitle a[href^=\"/clusters/\"]").await;
    let listed = text_of(
        &c,
        "tr[data-test=\"cluster-service\"][data-name=\"web-ui\"]",
    )
    .await;
    assert!(listed.contains("dcp-test/web:1"), "{listed}");
    click(&c, "tr[data-name=\"web-ui\"] a").await;
    click(&c, "h2 a[href^=\"/pools/\"]").await;

    // Shrink that node: picked in the table, gone after the task.
    click(&c, &format!("tr[data-address=\"{address}\"] .node-pick")).await;
    click(&c, "#shrink-pool").await;
    assert!(text_of(&c, "#shrink-list").await.contains(&address));
    click(&c, "#task-start").await;
    until(
        &c,
        "//*[@id='task-state']/span[@data-state='succeeded']",
        Duration::from_secs(60),
    )
    .await;
    click(&c, "h1 a").await;
    gone(&c, &format!("tr[data-address=\"{address}\"]")).await;
    assert_eq!(dcp_tests::docker::containers_of("web-ui").len(), 1);
    // The nodes are a page of the pool's nodes, with the pager's count.
    assert_eq!(text_of(&c, "#nodes-pager .count").await, "1 node");

    // Remove the other node: the dialog says what happens to its container
    // and machine (a DCP-made machine is released unless unticked) first.
    let other = rows_address(&c).await;
    click(&c, &format!("tr[data-address=\"{other}\"] .remove-node")).await;
    let what = text_of(&c, "#remove-node-what").await;
    assert!(
        what.contains("stops and removes the service's container"),
        "{what}"
    );
    let deadline = Instant::now() + WAIT;
    while !text_of(&c, "#remove-node-machine")
        .await
        .contains("is released")
    {
        assert!(
            Instant::now() < deadline,
            "the machine's default never showed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    click(&c, "#remove-node-release").await;
    let machine = text_of(&c, "#remove-node-machine").await;
    assert!(machine.contains("stays ready"), "{machine}");
    assert_eq!(
        dcp_tests::docker::containers_of("web-ui").len(),
        1,
        "nothing ran before confirming"
    );
    click(&c, "#remove-node-confirm").await;
    until(
        &c,
        "//*[@id='task-state']/span[@data-state='succeeded']",
        Duration::from_secs(60),
    )
    .await;
    click(&c, "h1 a").await;
    gone(&c, &format!("tr[data-address=\"{other}\"]")).await;
    assert!(dcp_tests::docker::containers_of("web-ui").is_empty());
    let machines = cloud.api.get("/api/v1/machines?state=ready").await;
    assert_eq!(machines["total"], 1, "the machine was kept: {machines}");

    // A template breaking the manual's rules: the step and the rule are named.
    click(&c, "nav a[href=\"/task-templates\"]").await;
    text_of(&c, "tr[data-name=\"upgrade\"]").await;
    assert_eq!(text_of(&c, ".pager .count").await, "6 task templates");
    click(&c, "#new-task-template").await;
    fill(&c, "#task-template-name", "grow").await;
    choose(&c, "task-template-purpose", "expand").await;
    click(&c, "#task-template-save").await;
    let error = text_of(&c, ".field-error[data-field=\"steps[0]\"]").await;
    assert!(error.contains("must start with create_vm"), "{error}");
    c.close().await.unwrap();
}

/// Cluster `cluster` with service `service` of `image` and its empty pool
/// `pool`, made through the API; answers the pool's id.
async fn service_pool(
    api: &dcp_tests::Api,
    cluster: &str,
    service: &str,
    image: &str,
    pool: &str,
) -> i64 {
    let (_, cluster) = api
        .post("/api/v1/clusters", &json!({"name": cluster}))
        .await;
    let (status, service) = api
        .post(
            "/api/v1/services",
            &json!({"cluster_id": cluster["id"], "name": service, "image": image}),
        )
        .await;
    assert_eq!(status, 201, "{service}");
    let (status, pool) = api
        .post(
            "/api/v1/pools",
            &json!({"service_id": service["id"], "name": pool}),
        )
        .await;
    assert_eq!(status, 201, "{pool}");
    pool["id"].as_i64().unwrap()
}

/// What a node's published web port answers.
async fn web_page(address: &str) -> String {
    reqwest::get(format!("http://{address}:{}/", dcp_tests::web_port()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The address of the pool page's first node row.
async fn rows_address(c: &Client) -> String {
    element(c, Locator::Css("[data-test=\"node-row\"]"), WAIT)
        .await
        .attr("data-address")
        .await
        .unwrap()
        .unwrap()
}

/// The addresses of the execution page's host rows, in order, once `what`
/// (an XPath predicate on `#hosts-table`) holds.
async fn host_rows(c: &Client, what: &str) -> Vec<String> {
    until(
        c,
        &format!("//table[@id='hosts-table'][{what}]"),
        Duration::from_secs(30),
    )
    .await;
    let mut addresses = Vec::new();
    for row in c.find_all(Locator::Css("tr.host-row")).await.unwrap() {
        addresses.push(row.attr("data-address").await.unwrap().unwrap_or_default());
    }
    addresses
}

#[tokio::test]
async fn an_execution_pages_and_filters_its_hosts_while_they_change_live() {
    // 30 targets: 27 addresses where nothing listens (unreachable at once),
    // then 3 real hosts that each wait for their own go-ahead file, so the
    // test decides when each one finishes; the second one fails.
    let fleet = dcp_tests::fleet::Fleet::start(3);
    let server = Server::start(&ServerOptions {
        admin_password: Some("ui-pages-pw".into()),
        env: vec![(
            "DCP_SSH_KEY_FILE".into(),
            fleet.key_path().display().to_string(),
        )],
        ..ServerOptions::default()
    });
    let real: Vec<String> = fleet.hosts.iter().map(|h| h.ip().to_string()).collect();
    let [a, b, c3, _] = fleet.hosts[0].ip().octets();
    let vacant: Vec<String> = (101..=127_u8)
        .map(|d| std::net::Ipv4Addr::new(a, b, c3, d).to_string())
        .collect();
    let gates = tempfile::tempdir().unwrap();
    let gate = |ip: &str| gates.path().join(format!("go-{ip}"));
    let script = format!(
        "ip=$(echo \"$SSH_CONNECTION\" | cut -d' ' -f3)\n\
         n=0; while [ ! -e {dir}/go-$ip ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done\n\
         if [ \"$ip\" = {failing} ]; then echo broken >&2; exit 4; fi\n\
         echo fine",
        dir = gates.path().display(),
        failing = real[1],
    );

    let (c, _driver) = logged_in(&server, "ui-pages-pw").await;
    click(&c, "nav a[href=\"/executions\"]").await;
    click(&c, "#new-run").await;
    fill(&c, "[id='run-command.script']", &script).await;
    let targets: Vec<String> = vacant.iter().chain(&real).cloned().collect();
    fill(&c, "#run-hosts", &targets.join("\n")).await;
    fill(&c, "#run-timeout-secs", "120").await;
    click(&c, "#run-start").await;
    until(&c, "//span[@id='execution-state']", WAIT).await;
    let url = c.current_url().await.unwrap();
    assert!(url.path().starts_with("/executions/"), "{url}");

    // 25 hosts a page: the first page has the first 25 targets in order.
    c.goto(&format!("{url}?per_page=25")).await.unwrap();
    let rows = host_rows(&c, "count(.//tr[@class='host-row']) = 25").await;
    assert_eq!(rows, targets[..25]);
    assert!(text_of(&c, ".pager").await.contains("Page 1 of 2"));
    until(
        &c,
        "//span[@id='execution-counts'][contains(., '27 unreachable')]",
        Duration::from_secs(30),
    )
    .await;

    // Page 2: the last five, the real hosts still running; one finishing
    // changes its row in place.
    click(&c, ".pager button:last-of-type").await;
    let rows = host_rows(&c, "count(.//tr[@class='host-row']) = 5").await;
    assert_eq!(rows, targets[25..]);
    assert!(text_of(&c, ".pager").await.contains("Page 2 of 2"));
    let row = |ip: &str, state: &str| format!(".//tr[@data-address='{ip}'][@data-state='{state}']");
    host_rows(&c, &row(&real[0], "running")).await;
    std::fs::write(gate(&real[0]), "").unwrap();
    host_rows(&c, &row(&real[0], "ok")).await;

    // Only failed hosts: none yet; the one that fails shows up on its own.
    choose(&c, "host-state", "failed").await;
    until(
        &c,
        "//p[@class='empty'][contains(., 'No failed hosts')]",
        WAIT,
    )
    .await;
    assert!(text_of(&c, ".pager").await.contains("Page 1 of 1"));
    std::fs::write(gate(&real[1]), "").unwrap();
    let rows = host_rows(&c, &row(&real[1], "failed")).await;
    assert_eq!(rows, [real[1].clone()]);
    assert_eq!(text_of(&c, ".pager .count").await, "1 host");
    click(&c, "tr.host-row button.logs").await;
    assert_eq!(text_of(&c, "pre.stderr").await.trim(), "broken");

    // Unreachable ones span both pages; the execution ends partially failed.
    std::fs::write(gate(&real[2]), "").unwrap();
    choose(&c, "host-state", "unreachable").await;
    let rows = host_rows(&c, "count(.//tr[@class='host-row']) = 25").await;
    assert_eq!(rows, vacant[..25]);
    assert_eq!(text_of(&c, ".pager .count").await, "27 hosts");
    until(
        &c,
        "//span[@id='execution-state'][contains(., 'partially_failed')]",
        Duration::from_secs(30),
    )
    .await;
}

/// Polls `GET path` until `done` holds for its body.
async fn api_until(api: &dcp_tests::Api, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = api.get(path).await;
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{path}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A failed execution of `exit 3` on `machine`, once it has ended.
async fn failed_execution(api: &dcp_tests::Api, machine: i64) -> i64 {
    let (status, created) = api
        .post(
            "/api/v1/executions",
            &json!({"command": {"script": "exit 3"}, "machine_ids": [machine]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    api_until(api, &format!("/api/v1/executions/{id}"), |e| {
        e["state"] == "failed"
    })
    .await;
    id
}

#[tokio::test]
async fn the_overview_after_login_counts_links_and_refreshes() {
    let fleet = dcp_tests::fleet::Fleet::start(1);
    let api = dcp_tests::Api::start_with(&ServerOptions {
        admin_password: Some("ui-overview-pw".into()),
        // The pool's servers are added by address: DCP's key logs in.
        env: vec![(
            "DCP_SSH_KEY_FILE".into(),
            fleet.key_path().display().to_string(),
        )],
        ..ServerOptions::default()
    })
    .await;
    // An adopted server, a pool of two servers added by address, and a
    // command that failed on the server.
    let (status, machine) = api
        .post(
            "/api/v1/machines/adopt",
            &json!({"name": "box", "address": fleet.hosts[0].ip().to_string(),
                    "private_key": fleet.private_key}),
        )
        .await;
    assert_eq!(status, 201, "{machine}");
    let machine = machine["id"].as_i64().unwrap();
    api_until(&api, &format!("/api/v1/machines/{machine}"), |m| {
        m["machine"]["state"] == "ready"
    })
    .await;
    let pool = service_pool(&api, "shop", "web", "nginx:1", "web-a").await;
    let (status, nodes) = api
        .post(
            &format!("/api/v1/pools/{pool}/nodes"),
            &json!({"addresses": [{"address": "127.20.6.1"}, {"address": "127.20.6.2"}]}),
        )
        .await;
    assert_eq!(status, 201, "{nodes}");
    let failed = failed_execution(&api, machine).await;

    // Logging in lands on the overview, with the right numbers.
    let (c, _driver) = logged_in(&api.server, "ui-overview-pw").await;
    let attr = |css: &'static str, name: &'static str| {
        let c = c.clone();
        async move {
            element(&c, Locator::Css(css), WAIT)
                .await
                .attr(name)
                .await
                .unwrap()
                .unwrap_or_default()
        }
    };
    assert_eq!(attr("[data-test=\"fleet-total\"]", "data-count").await, "1");
    assert_eq!(
        attr(
            "[data-test=\"fleet-row\"][data-provider=\"adopted\"] [data-test=\"fleet-state\"][data-state=\"ready\"]",
            "data-count"
        )
        .await,
        "1"
    );
    let pool_row = "[data-test=\"pool-health\"][data-name=\"web-a\"]";
    assert_eq!(attr(pool_row, "data-nodes").await, "2");
    assert_eq!(attr(pool_row, "data-pending").await, "2");
    assert_eq!(attr(pool_row, "data-health").await, "changing");
    assert_eq!(
        attr("[data-test=\"executions-failed\"]", "data-count").await,
        "1"
    );
    text_of(
        &c,
        &format!("#overview-executions-failed [data-id=\"{failed}\"]"),
    )
    .await;
    let shot = c.screenshot().await.unwrap();
    let _ = std::fs::write(std::env::temp_dir().join("dcp-overview.png"), shot);

    // It refreshes by itself: another failure shows without a reload.
    let again = failed_execution(&api, machine).await;
    text_of(
        &c,
        &format!("#overview-executions-failed [data-id=\"{again}\"]"),
    )
    .await;
    assert_eq!(
        attr("[data-test=\"executions-failed\"]", "data-count").await,
        "2"
    );

    // Each item links to its page: the pool, and the machines in a state.
    click(&c, &format!("{pool_row} a[data-test=\"overview-pool\"]")).await;
    until(&c, "//h1[contains(., 'web-a')]", WAIT).await;
    assert!(
        c.current_url()
            .await
            .unwrap()
            .path()
            .ends_with(&format!("/pools/{pool}"))
    );
    click(&c, "nav a[href=\"/\"]").await;
    click(
        &c,
        "[data-test=\"fleet-row\"][data-provider=\"adopted\"] a[href=\"/machines?state=ready\"]",
    )
    .await;
    until(&c, "//tr[@data-test='machine-row'][@data-name='box']", WAIT).await;
    let filter = c
        .find(Locator::Css("#machine-state-filter"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(filter.as_deref(), Some("ready"));
    c.close().await.unwrap();
}

/// What the page has fetched since its document loaded: (URL, bytes on the
/// wire for the body, bytes decoded) per resource, from Resource Timing.
async fn fetched(c: &Client) -> Vec<(String, u64, u64)> {
    let entries = c
        .execute(
            "return performance.getEntriesByType('resource')\
               .map(e => [e.name, e.encodedBodySize, e.decodedBodySize]);",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(entries).unwrap()
}

/// The documents this tab has loaded: one per full page load.
async fn documents(c: &Client) -> Vec<String> {
    let names = c
        .execute(
            "return performance.getEntriesByType('navigation').map(e => e.name);",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(names).unwrap()
}

/// The wasm modules this tab has fetched: the app's main module and the
/// chunks of the pages it opened.
async fn wasm_fetched(c: &Client) -> Vec<(String, u64, u64)> {
    fetched(c)
        .await
        .into_iter()
        .filter(|(url, _, _)| url.ends_with(".wasm"))
        .collect()
}

#[tokio::test]
async fn a_logged_out_deep_link_loads_the_app_once_compressed_and_returns_there() {
    let server = Server::start(&ServerOptions {
        admin_password: Some("ui-deep-link-pw".into()),
        ..ServerOptions::default()
    });
    let (c, _driver) = browser().await;
    let deep_link = server.url("/pools/3");
    c.goto(&deep_link).await.unwrap();
    fill(&c, "#login-username", "admin").await;
    assert_eq!(
        c.current_url().await.unwrap().as_str(),
        server.url("/login?next=%2Fpools%2F3")
    );
    // The login page is the same document, not a second load of the app.
    assert_eq!(documents(&c).await, [deep_link.as_str()]);
    let wasm = wasm_fetched(&c).await;
    let main: Vec<_> = wasm
        .iter()
        .filter(|(url, _, _)| url.ends_with("/dcp_bg.wasm"))
        .collect();
    assert_eq!(main.len(), 1, "{wasm:?}");
    let (url, on_the_wire, decoded) = main[0];
    // In a directory named after its content, and compressed (brotli: well
    // under half); the chunks of split-out pages come compressed too.
    assert!(url.contains("/static/dcp."), "{url}");
    assert!(on_the_wire * 2 < *decoded, "{wasm:?}");
    assert!(
        wasm.iter().all(|(_, wire, decoded)| wire < decoded),
        "{wasm:?}"
    );

    // Signing in returns to the deep link, still without a reload, and
    // fetches no module twice.
    fill(&c, "#login-password", "ui-deep-link-pw").await;
    click(&c, "#login-submit").await;
    text_of(&c, ".topbar").await;
    assert_eq!(c.current_url().await.unwrap().as_str(), deep_link);
    assert_eq!(documents(&c).await, [deep_link.as_str()]);
    let mut urls: Vec<_> = wasm_fetched(&c)
        .await
        .into_iter()
        .map(|(url, _, _)| url)
        .collect();
    let fetches = urls.len();
    urls.sort();
    urls.dedup();
    assert_eq!(urls.len(), fetches, "{urls:?}");
    assert_eq!(
        urls.iter()
            .filter(|url| url.ends_with("/dcp_bg.wasm"))
            .count(),
        1
    );

    // A page not opened yet arrives as its own chunk when first opened.
    click(&c, ".nav a[href=\"/plugins\"]").await;
    until(&c, "//h1[text()='Plugins']", WAIT).await;
    let after: Vec<_> = wasm_fetched(&c)
        .await
        .into_iter()
        .map(|(url, _, _)| url)
        .collect();
    assert!(after.len() > fetches, "{after:?}");
    assert_eq!(
        after
            .iter()
            .filter(|url| url.ends_with("/dcp_bg.wasm"))
            .count(),
        1
    );
    c.close().await.unwrap();
}

/// Waits until the picker `list` offers exactly the machines named `names`.
async fn offered(c: &Client, list: &str, names: &[&str]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut seen = Vec::new();
        for item in c
            .find_all(Locator::Css(&format!(
                "#{list} li[data-test=\"pick-machine\"]"
            )))
            .await
            .unwrap()
        {
            // The list may be redrawn between finding and reading: read
            // again on the next round.
            let name = item.attr("data-name").await.ok().flatten();
            seen.push(name.unwrap_or_default());
        }
        if seen == names {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{list} offers {seen:?}, not {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts an ad-hoc run of `script` from the executions page on the target
/// `pick` chooses, and waits for it to succeed on `hosts` hosts.
async fn run_ad_hoc<F: std::future::Future<Output = ()>>(
    c: &Client,
    script: &str,
    pick: impl FnOnce() -> F,
    hosts: usize,
) {
    click(c, "nav a[href=\"/executions\"]").await;
    click(c, "#new-run").await;
    fill(c, "[id='run-command.script']", script).await;
    pick().await;
    click(c, "#run-start").await;
    let done = "//span[@id='execution-state'][not(contains(., 'pending')) and not(contains(., 'running'))]";
    if c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::XPath(done))
        .await
        .is_err()
    {
        panic!("the run did not end: {}", text_of(c, "body").await);
    }
    let state = text_of(c, "#execution-state").await;
    let page = text_of(c, "main").await;
    assert!(state.contains("succeeded"), "{state}: {page}");
    let counts = text_of(c, "#execution-counts").await;
    assert!(
        counts.contains(&format!("{hosts} ok of {hosts} hosts")),
        "{counts}"
    );
}

#[tokio::test]
async fn machines_are_picked_into_a_pool_and_commands_run_on_pools_and_machines_in_the_ui() {
    // Two adopted servers, each with its own key; DCP has no default key.
    let fleet = dcp_tests::fleet::Fleet::start(2);
    let api = dcp_tests::Api::start_with(&ServerOptions {
        admin_password: Some("ui-pick-pw".into()),
        ..ServerOptions::default()
    })
    .await;
    let hosts: Vec<String> = fleet.hosts.iter().map(|h| h.ip().to_string()).collect();
    let mut machines = Vec::new();
    for (host, name) in hosts.iter().zip(["edge-one", "edge-two"]) {
        let (status, machine) = api
            .post(
                "/api/v1/machines/adopt",
                &json!({"name": name, "address": host, "private_key": fleet.private_key}),
            )
            .await;
        assert_eq!(status, 201, "{machine}");
        machines.push(machine["id"].as_i64().unwrap());
    }
    let pool = service_pool(&api, "picks", "edge", "nginx:1.27", "edge-a").await;
    let (c, _driver) = logged_in(&api.server, "ui-pick-pw").await;
    until(&c, "//nav", WAIT).await;
    c.goto(&api.server.url(&format!("/pools/{pool}")))
        .await
        .unwrap();

    // By address: the dialog says before trying that a key is needed, and
    // the server's refusal lands under the key.
    click(&c, "#add-server").await;
    until(
        &c,
        "//p[@id='server-credential'][contains(., 'No default key is configured: give a key or password')]",
        WAIT,
    )
    .await;
    fill(&c, "#server-address", &hosts[0]).await;
    click(&c, "#task-start").await;
    let error = text_of(&c, ".field-error[data-field=\"private_key\"]").await;
    assert!(error.contains("ssh_key_file"), "{error}");
    click(&c, "#task-form button.cancel").await;
    gone(&c, "#task-form").await;

    // Picked: searched by name, one of the two joins with its own address.
    click(&c, "#add-machines").await;
    offered(&c, "pool-pick-list", &["edge-two", "edge-one"]).await;
    fill(&c, "#pool-pick-search", "TWO").await;
    offered(&c, "pool-pick-list", &["edge-two"]).await;
    click(&c, "li[data-name=\"edge-two\"] input.pick-machine").await;
    click(&c, "#task-start").await;
    let row = text_of(
        &c,
        &format!("tr[data-test=\"node-row\"][data-address=\"{}\"]", hosts[1]),
    )
    .await;
    assert!(row.contains(&format!("#{}", machines[1])), "{row}");
    gone(&c, "#task-form").await;
    // It is in the pool now: no longer offered, and its page says where.
    click(&c, "#add-machines").await;
    offered(&c, "pool-pick-list", &["edge-one"]).await;
    click(&c, "#task-form button.cancel").await;
    let detail = api.get(&format!("/api/v1/machines/{}", machines[1])).await;
    assert_eq!(detail["machine"]["pool_id"], pool, "{detail}");
    c.goto(&api.server.url(&format!("/machines/{}", machines[1])))
        .await
        .unwrap();
    assert_eq!(
        text_of(&c, "[data-test=\"machine-pool\"]").await,
        format!("#{pool}")
    );

    // A run on the pool reaches its one node with the machine's key.
    run_ad_hoc(
        &c,
        "echo from-pool",
        || async {
            click(&c, "#run-target-pool").await;
            choose(&c, "run-pool", "edge-a").await;
        },
        1,
    )
    .await;
    click(
        &c,
        &format!("tr[data-address=\"{}\"] button.logs", hosts[1]),
    )
    .await;
    assert_eq!(text_of(&c, "pre.stdout").await.trim(), "from-pool");

    // A run on picked machines reaches both.
    run_ad_hoc(
        &c,
        "echo from-machines",
        || async {
            click(&c, "#run-target-machines").await;
            offered(&c, "run-machines-list", &["edge-two", "edge-one"]).await;
            click(&c, "li[data-name=\"edge-one\"] input.pick-machine").await;
            click(&c, "li[data-name=\"edge-two\"] input.pick-machine").await;
        },
        2,
    )
    .await;
    click(
        &c,
        &format!("tr[data-address=\"{}\"] button.logs", hosts[0]),
    )
    .await;
    assert_eq!(text_of(&c, "pre.stdout").await.trim(), "from-machines");

    // A run on the pool that waits for a sign from the test: what it
    // printed shows while it still runs.
    let marker = std::env::temp_dir().join(format!("dcp-live-{}-{}", std::process::id(), pool));
    let _ = std::fs::remove_file(&marker);
    click(&c, "nav a[href=\"/executions\"]").await;
    click(&c, "#new-run").await;
    fill(
        &c,
        "[id='run-command.script']",
        &format!(
            "echo first-half; while [ ! -e {} ]; do sleep 0.1; done; echo second-half",
            marker.display()
        ),
    )
    .await;
    click(&c, "#run-target-pool").await;
    choose(&c, "run-pool", "edge-a").await;
    click(&c, "#run-start").await;
    until(
        &c,
        "//span[@id='execution-state'][contains(., 'running')]",
        WAIT,
    )
    .await;
    click(
        &c,
        &format!("tr[data-address=\"{}\"] button.logs", hosts[1]),
    )
    .await;
    until(
        &c,
        "//pre[contains(@class, 'stdout')][contains(., 'first-half')]",
        WAIT,
    )
    .await;
    assert!(text_of(&c, "#execution-state").await.contains("running"));
    assert!(!text_of(&c, "pre.stdout").await.contains("second-half"));
    std::fs::write(&marker, b"").unwrap();
    until(
        &c,
        "//span[@id='execution-state'][contains(., 'succeeded')]",
        WAIT,
    )
    .await;
    until(
        &c,
        "//pre[contains(@class, 'stdout')][contains(., 'second-half')]",
        WAIT,
    )
    .await;
    let _ = std::fs::remove_file(&marker);
}

/// An nginx.conf for nginx host `i`: it listens on the host's own address
/// only, and `/nginx-health` answers `marker`, which says which version is
/// live.
fn balancer_conf(hosts: &dcp_tests::nginx::NginxHosts, i: usize, marker: &str) -> String {
    let addr = hosts.addr(i);
    format!(
        "# {marker}\nworker_processes 1;\npid nginx.pid;\nerror_log error.log;\nevents {{}}\n\
         http {{\n    include dcp-upstreams/*.conf;\n    server {{\n        listen {addr}:80;\n        \
         location / {{ proxy_pass http://default_upstream; }}\n        \
         location = /nginx-health {{ return 200 \"{marker}\\n\"; }}\n    }}\n}}\n"
    )
}

/// `name` of the first element matching `css`.
async fn attr_of(c: &Client, css: &str, name: &str) -> String {
    element(c, Locator::Css(css), WAIT)
        .await
        .attr(name)
        .await
        .unwrap()
        .unwrap_or_default()
}

/// Waits until nginx host `i` answers `/nginx-health` with `marker`.
async fn health_says(hosts: &dcp_tests::nginx::NginxHosts, i: usize, marker: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = hosts.get(i, "/nginx-health");
        if status == 200 && body == format!("{marker}\n") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/nginx-health answers {status} {body:?}, not {marker}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_balancer_unit_gets_a_node_an_upstream_edit_and_a_release_rolled_back_live_in_the_ui() {
    // A real nginx behind a real sshd, adopted through the API: the setup
    // that is not about the UI.
    let hosts = dcp_tests::nginx::NginxHosts::start(1);
    let addr = hosts.addr(0).to_string();
    let api = dcp_tests::Api::start_with(&ServerOptions {
        admin_password: Some("ui-discovery-pw".into()),
        env: dcp_tests::cloud::machine_env(),
        ..ServerOptions::default()
    })
    .await;
    let (status, machine) = api
        .post(
            "/api/v1/machines/adopt",
            &json!({"name": "lb-one", "address": addr, "private_key": hosts.fleet.private_key}),
        )
        .await;
    assert_eq!(status, 201, "{machine}");
    api_until(&api, &format!("/api/v1/machines/{}", machine["id"]), |m| {
        m["machine"]["state"] == "ready"
    })
    .await;
    let (c, _driver) = logged_in(&api.server, "ui-discovery-pw").await;

    // A group: a name the server refuses shows under the field.
    click(&c, "nav a[href=\"/discovery\"]").await;
    click(&c, "#new-lb-group").await;
    fill(&c, "#lb-group-name", "Edge Web").await;
    click(&c, "#lb-group-save").await;
    text_of(&c, "#lb-group-form .field-error[data-field=\"name\"]").await;
    fill(&c, "#lb-group-name", "edge").await;
    fill(&c, "#lb-group-description", "The edge balancers").await;
    click(&c, "#lb-group-save").await;
    gone(&c, "#lb-group-form").await;

    // A unit of it: settings that are not JSON are refused before sending;
    // saved, its page opens.
    click(&c, "section[data-name=\"edge\"] button.new-unit").await;
    fill(&c, "#lb-unit-name", "edge-nginx").await;
    let plugin = c
        .find(Locator::Css("#lb-unit-plugin"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(plugin.as_deref(), Some("nginx"));
    fill(&c, "#lb-unit-config", "{prefix: 1").await;
    click(&c, "#lb-unit-save").await;
    let error = text_of(&c, ".field-error[data-field=\"config\"]").await;
    assert!(error.contains("JSON"), "{error}");
    fill(&c, "#lb-unit-config", "{}").await;
    click(&c, "#lb-unit-save").await;
    until(&c, "//h1[@id='unit-name'][. = 'edge-nginx']", WAIT).await;

    // The adopted machine joins as a node with its own prefix. A reload
    // may take up to 60 s, so a held lock (below) is waited for up to the
    // release call's own limit.
    click(&c, "#add-lb-node").await;
    choose(&c, "lb-node-machine", "lb-one").await;
    let mut settings = hosts.settings(0);
    settings["reload_timeout_ms"] = json!(60_000);
    fill(&c, "#lb-node-settings", &settings.to_string()).await;
    click(&c, "#lb-node-save").await;
    let node_row = format!("tr[data-test=\"lb-node\"][data-address=\"{addr}\"]");
    let row = text_of(&c, &node_row).await;
    assert!(row.contains(&format!("#{}", machine["id"])), "{row}");
    // The group has no upstreams yet: nothing to be behind on.
    assert_eq!(attr_of(&c, &node_row, "data-in-sync").await, "true");
    let node = attr_of(&c, &node_row, "data-id").await;

    // An upstream of the group, named as the main configuration's
    // proxy_pass; its members edited on its page.
    click(&c, "nav a[href=\"/discovery\"]").await;
    click(&c, "section[data-name=\"edge\"] button.new-upstream").await;
    fill(&c, "#upstream-name", "default_upstream").await;
    click(&c, "#upstream-save").await;
    click(
        &c,
        "section[data-name=\"edge\"] tr[data-name=\"default_upstream\"] a",
    )
    .await;
    until(
        &c,
        "//h1[@id='upstream-name'][. = 'default_upstream']",
        WAIT,
    )
    .await;
    // A bad address comes back from the server under the address input.
    fill(&c, "#upstream-add-address", "bad host!").await;
    fill(&c, "#upstream-add-port", "8080").await;
    click(&c, "#upstream-add").await;
    let error = text_of(
        &c,
        "#upstream-add-form .field-error[data-field=\"address\"]",
    )
    .await;
    assert!(error.contains("IP address"), "{error}");
    for (address, weight) in [("127.24.0.10", ""), ("127.24.0.11", "5")] {
        fill(&c, "#upstream-add-address", address).await;
        fill(&c, "#upstream-add-port", "8080").await;
        fill(&c, "#upstream-add-weight", weight).await;
        click(&c, "#upstream-add").await;
        text_of(
            &c,
            &format!("tr[data-test=\"member\"][data-address=\"{address}\"]"),
        )
        .await;
    }
    until(
        &c,
        "//div[@id='upstream-change'][@data-state='succeeded']",
        WAIT,
    )
    .await;
    // A new weight for one; the other removed after asking.
    click(
        &c,
        "tr[data-test=\"member\"][data-address=\"127.24.0.11\"] button.edit-weight",
    )
    .await;
    fill(&c, "#member-weight", "3").await;
    click(&c, "#member-weight-save").await;
    until(
        &c,
        "//tr[@data-address='127.24.0.11']/td[@class='weight'][. = '3']",
        WAIT,
    )
    .await;
    click(
        &c,
        "tr[data-test=\"member\"][data-address=\"127.24.0.10\"] button.remove-member",
    )
    .await;
    click(&c, "#member-remove-confirm").await;
    gone(&c, "tr[data-test=\"member\"][data-address=\"127.24.0.10\"]").await;
    // The last one: the dialog says what emptying the upstream costs; kept.
    click(
        &c,
        "tr[data-test=\"member\"][data-address=\"127.24.0.11\"] button.remove-member",
    )
    .await;
    let asked = text_of(&c, ".dialog .confirm-question").await;
    assert!(
        asked.contains("last backend") && asked.contains("fails"),
        "{asked}"
    );
    click(&c, ".dialog button.cancel").await;
    gone(&c, "#member-remove-force").await;
    until(
        &c,
        &format!("//tr[@data-test='upstream-node'][@data-node='{node}'][@data-in-sync='true']"),
        WAIT,
    )
    .await;
    let served = hosts.read_upstream(0, "default_upstream");
    assert!(
        served.contains("server 127.24.0.11:8080 weight=3") && !served.contains("127.24.0.10"),
        "{served}"
    );
    // Its recent changes open to the members before and after.
    click(
        &c,
        "#upstream-changes tr[data-test=\"change\"] button.expand-change",
    )
    .await;
    let members = text_of(&c, "#upstream-changes [data-test=\"change-members\"]").await;
    assert!(members.contains("- 127.24.0.10:8080"), "{members}");
    // The whole membership on both sides, replayed by the server on demand.
    click(&c, "#upstream-changes [data-test=\"change-whole\"]").await;
    let before = text_of(&c, "#upstream-changes [data-test=\"change-before\"]").await;
    let after = text_of(&c, "#upstream-changes [data-test=\"change-after\"]").await;
    assert!(
        before.contains("127.24.0.10:8080") && before.contains("127.24.0.11:8080"),
        "{before}"
    );
    assert!(
        after.contains("127.24.0.11:8080 (weight 3)") && !after.contains("127.24.0.10"),
        "{after}"
    );

    // Back on the unit: the node serves the upstream; a re-sync says so.
    click(&c, "nav a[href=\"/discovery\"]").await;
    click(&c, "tr[data-test=\"lb-unit\"][data-name=\"edge-nginx\"] a").await;
    until(
        &c,
        &format!("//tr[@data-test='lb-node'][@data-id='{node}'][@data-in-sync='true']"),
        WAIT,
    )
    .await;
    click(&c, &format!("{node_row} button.resync-node")).await;
    until(
        &c,
        "//div[@id='sync-report'][@data-state='succeeded']",
        WAIT,
    )
    .await;

    // The main configuration, version 1.
    click(&c, "#new-file").await;
    fill(&c, "#file-path", "nginx.conf").await;
    fill(&c, "#file-content", &balancer_conf(&hosts, 0, "one")).await;
    click(&c, "#file-save").await;
    let saved = text_of(&c, "#file-saved").await;
    assert!(saved.contains("nginx.conf as version 1"), "{saved}");

    // Published while another change holds the node's nginx (the plugin's
    // lock, held by a live process: this test): the release page shows the
    // node running, live, then done once the lock goes.
    let lock = hosts.prefix(0).join(".dcp-lock");
    std::fs::create_dir_all(&lock).unwrap();
    std::fs::write(lock.join("pid"), std::process::id().to_string()).unwrap();
    click(&c, "#unit-publish").await;
    click(&c, "#publish-confirm").await;
    // One wait for all three, so the lock is held no longer than the page
    // takes to show them (a loaded machine makes every wait slower).
    until(
        &c,
        &format!(
            "//tr[@id='release-node-{node}'][@data-state='running']\
             [//span[@id='release-state'][@data-state='running']][//*[@id='release-live']]"
        ),
        WAIT,
    )
    .await;
    std::fs::remove_dir_all(&lock).unwrap();
    let first = attr_of(&c, "#release-detail", "data-id").await;
    until(
        &c,
        &format!("//tr[@id='release-node-{node}'][@data-state='succeeded']"),
        Duration::from_secs(40),
    )
    .await;
    until(
        &c,
        "//span[@id='release-state'][@data-state='succeeded']",
        WAIT,
    )
    .await;
    gone(&c, "#release-live").await;
    let log = text_of(&c, &format!("#release-node-{node} pre.release-log")).await;
    assert!(!log.trim().is_empty());
    health_says(&hosts, 0, "one").await;

    // Version 2 starts from version 1's text; the diff shows the change.
    click(
        &c,
        "tr[data-test=\"file\"][data-path=\"nginx.conf\"] button.edit-file",
    )
    .await;
    let text = element(&c, Locator::Css("#file-content"), WAIT)
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert_eq!(text, balancer_conf(&hosts, 0, "one"));
    fill(&c, "#file-content", &balancer_conf(&hosts, 0, "two")).await;
    click(&c, "#file-save").await;
    // The banner of the first save is still up until this one answers.
    until(
        &c,
        "//div[@id='file-saved'][contains(., 'nginx.conf as version 2')]",
        WAIT,
    )
    .await;
    until(
        &c,
        "//div[@id='file-diff'][@data-from='1'][@data-to='2']//div[contains(@class, 'removed')][contains(., '# one')]",
        WAIT,
    )
    .await;
    until(
        &c,
        "//div[@id='file-diff']//div[contains(@class, 'added')][contains(., 'return 200 \"two')]",
        WAIT,
    )
    .await;
    click(&c, "#unit-publish").await;
    click(&c, "#publish-confirm").await;
    until(
        &c,
        "//span[@id='release-state'][@data-state='succeeded']",
        Duration::from_secs(40),
    )
    .await;
    health_says(&hosts, 0, "two").await;

    // Back to the first release: asked, then published again as a new
    // release that says what it rolls back to.
    click(
        &c,
        &format!("tr[data-test=\"release-row\"][data-id=\"{first}\"] button.rollback-release"),
    )
    .await;
    let asked = text_of(&c, ".dialog .confirm-question").await;
    assert!(asked.contains(&format!("release #{first}")), "{asked}");
    click(&c, "#rollback-release-confirm").await;
    until(
        &c,
        &format!("//div[@id='release-detail'][@data-id!='{first}']//span[@id='release-state'][@data-state='succeeded']"),
        Duration::from_secs(40),
    )
    .await;
    until(
        &c,
        &format!("//div[@id='release-detail'][contains(., 'rollback to #{first}')]"),
        WAIT,
    )
    .await;
    health_says(&hosts, 0, "one").await;
    let shot = c.screenshot().await.unwrap();
    let _ = std::fs::write(std::env::temp_dir().join("dcp-discovery.png"), shot);
    c.close().await.unwrap();
}

#[tokio::test]
async fn the_registry_is_browsed_to_a_tags_layers_and_one_tag_deleted_in_the_ui() {
    let api = dcp_tests::Api::start_with(&ServerOptions {
        admin_password: Some("ui-images-pw".into()),
        env: vec![("DCP_REGISTRY_ADDR".into(), "127.26.0.4:5000".into())],
        ..ServerOptions::default()
    })
    .await;
    api_until(&api, "/api/v1/registry", |s| s["serving"] == true).await;
    let image = dcp_tests::docker::web_image("ui-market");
    let (_client, host) = dcp_tests::docker::push_to_registry(
        &api,
        &[(&image, "shop/web:1.0"), (&image, "shop/web:stable")],
    )
    .await;
    let (c, _driver) = logged_in(&api.server, "ui-images-pw").await;
    c.goto(&api.server.url("/images")).await.unwrap();
    if c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#registry-status[data-serving='true']"))
        .await
        .is_err()
    {
        let page = c.source().await.unwrap_or_default();
        let status = api.get("/api/v1/registry").await;
        panic!("the registry never showed as serving ({status}); the page: {page}");
    }
    assert_eq!(text_of(&c, "#registry-host").await, host);

    // Repository → its tags → one tag's layers and history.
    click(&c, "tr[data-test='repository'][data-name='shop/web'] a").await;
    element(
        &c,
        Locator::Css("tr[data-test='image-tag'][data-tag='stable']"),
        WAIT,
    )
    .await;
    click(&c, "tr[data-test='image-tag'][data-tag='1.0'] a").await;
    element(
        &c,
        Locator::Css("#tag-detail[data-tag='1.0'][data-layers='2']"),
        WAIT,
    )
    .await;
    assert_eq!(
        text_of(&c, "#tag-pull").await,
        format!("{host}/shop/web:1.0")
    );
    assert_eq!(text_of(&c, "#tag-also").await, "stable");
    assert!(text_of(&c, "#tag-history").await.contains("EXPOSE"));
    assert!(
        c.current_url()
            .await
            .unwrap()
            .as_str()
            .ends_with("/images?repository=shop%2Fweb&tag=1.0"),
        "the tag shown is in the address"
    );

    // Deleting 1.0 keeps stable, the same image.
    click(&c, "#tag-delete").await;
    click(&c, "#tag-delete-confirm").await;
    let said = text_of(&c, "#tag-deleted").await;
    assert!(said.contains("kept stable"), "{said}");
    gone(&c, "tr[data-test='image-tag'][data-tag='1.0']").await;
    let tags = api
        .get("/api/v1/registry/repositories/shop%2Fweb/tags")
        .await;
    assert_eq!(tags["total"], 1, "{tags}");

    // A link to a tag opens it.
    c.goto(&api.server.url("/images?repository=shop%2Fweb&tag=stable"))
        .await
        .unwrap();
    element(&c, Locator::Css("#tag-detail[data-tag='stable']"), WAIT).await;

    // A newer build, then a rule that keeps only the newest tag: the
    // preview names stable, and the clean-up deletes it and says what it freed.
    let newer = dcp_tests::docker::web_image("ui-market-newer");
    dcp_tests::docker::push_to_registry(&api, &[(&newer, "shop/web:2.0")]).await;
    fill(&c, "#retention-repository", "shop/web").await;
    fill(&c, "#retention-keep-last", "0").await;
    click(&c, "#retention-save").await;
    let said = text_of(&c, "#retention-form .field-error[data-field='keep_last']").await;
    assert!(said.contains("1–10000"), "{said}");
    fill(&c, "#retention-keep-last", "1").await;
    click(&c, "#retention-save").await;
    element(
        &c,
        Locator::Css("tr[data-test='retention-rule'][data-repository='shop/web']"),
        WAIT,
    )
    .await;
    click(&c, "#cleanup-preview").await;
    element(&c, Locator::Css("#cleanup-plan[data-count='1']"), WAIT).await;
    assert!(
        text_of(&c, "#cleanup-plan")
            .await
            .contains("shop/web:stable")
    );
    click(&c, "#cleanup-run").await;
    element(
        &c,
        Locator::Css("#cleanup-result[data-state='succeeded']"),
        WAIT,
    )
    .await;
    let said = text_of(&c, "#cleanup-result").await;
    assert!(said.starts_with("Deleted 1 tag(s), freed "), "{said}");
    element(
        &c,
        Locator::Css("tr[data-test='cleanup'][data-state='succeeded']"),
        WAIT,
    )
    .await;
    let tags = api
        .get("/api/v1/registry/repositories/shop%2Fweb/tags")
        .await;
    assert_eq!(tags["items"][0]["tag"], "2.0", "{tags}");
    assert_eq!(tags["total"], 1, "{tags}");
    c.close().await.unwrap();
}

/// Waits until the text of `css` satisfies `done`, and answers it.
async fn text_until(
    c: &Client,
    css: &str,
    within: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = text_of(c, css).await;
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{css} says {text:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Picks `op` in the op select of instruction row `row`.
async fn choose_op(c: &Client, row: &str, op: &str) {
    element(c, Locator::Css(&format!("{row} .instruction-op")), WAIT)
        .await
        .select_by_value(op)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_instruction_form_renders_its_dockerfile_and_a_builds_log_streams_live() {
    let api = dcp_tests::Api::start_with(&ServerOptions {
        admin_password: Some("ui-builds-pw".into()),
        env: vec![("DCP_REGISTRY_ADDR".into(), "127.26.0.5:5000".into())],
        ..ServerOptions::default()
    })
    .await;
    api_until(&api, "/api/v1/registry", |s| s["serving"] == true).await;
    let base = dcp_tests::docker::web_image("ui-build");
    // A base in the registry's base/ is offered to FROM; the build starts
    // from the daemon's local image, typed.
    let (_client, host) =
        dcp_tests::docker::push_to_registry(&api, &[(&base, "base/busybox:1")]).await;
    let (c, _driver) = logged_in(&api.server, "ui-builds-pw").await;
    c.goto(&api.server.url("/images")).await.unwrap();
    click(&c, "#tab-projects").await;
    click(&c, "#new-project").await;
    fill(&c, "#project-repository", "shop/formed").await;

    // The form starts at a FROM; RUN and CMD rows follow.
    let row = |i: usize| format!("tr.instruction[data-index='{i}']");
    element(
        &c,
        Locator::Css(&format!(
            "{} .instruction-base option[value='{host}/base/busybox:1']",
            row(0)
        )),
        WAIT,
    )
    .await;
    fill(&c, &format!("{} .instruction-image", row(0)), &base).await;
    click(&c, "#add-instruction").await;
    fill(
        &c,
        &format!("{} .instruction-command", row(1)),
        "echo built-by-form && sleep 2",
    )
    .await;
    click(&c, "#add-instruction").await;
    choose_op(&c, &row(2), "CMD").await;
    fill(
        &c,
        &format!("{} .instruction-args", row(2)),
        "/bin/sh -c 'echo hello'",
    )
    .await;

    // A bad ENV name: the server's error shows at its row, and goes with it.
    click(&c, "#add-instruction").await;
    choose_op(&c, &row(3), "ENV").await;
    fill(&c, &format!("{} .instruction-name", row(3)), "not a name").await;
    fill(&c, &format!("{} .instruction-value", row(3)), "x").await;
    element(&c, Locator::Css(&format!("{} .field-error", row(3))), WAIT).await;
    click(&c, &format!("{} .remove", row(3))).await;
    gone(&c, "#preview-error").await;

    // The Dockerfile the rows render to, beside them.
    let rendered = text_until(&c, "#rendered-dockerfile", WAIT, |t| {
        t.contains("CMD") && !t.contains("ENV")
    })
    .await;
    let lines: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(lines.len(), 3, "{rendered}");
    assert_eq!(lines[0], format!("FROM {base}"));
    assert_eq!(lines[1], "RUN echo built-by-form && sleep 2");
    let cmd: Vec<String> =
        serde_json::from_str(lines[2].strip_prefix("CMD ").expect(&rendered)).unwrap();
    assert_eq!(cmd, ["/bin/sh", "-c", "echo hello"]);

    // Saved: the project's page shows the same Dockerfile.
    click(&c, "#project-save").await;
    // The form has a `#project-repository` too: wait for the page first.
    element(&c, Locator::Css("#project-facts"), WAIT).await;
    assert_eq!(text_of(&c, "#project-repository").await, "shop/formed");
    let shown = text_of(&c, "#project-dockerfile").await;
    assert!(
        shown.contains("RUN echo built-by-form && sleep 2"),
        "{shown}"
    );
    let projects: dcp_api_types::Page<dcp_api_types::ImageProject> =
        serde_json::from_value(api.get("/api/v1/image-projects").await).unwrap();
    assert_eq!(
        projects.items[0].dockerfile,
        dcp_api_types::DockerfileSource::Form {
            instructions: vec![
                dcp_api_types::Instruction::From {
                    image: base.clone()
                },
                dcp_api_types::Instruction::Run {
                    command: "echo built-by-form && sleep 2".into()
                },
                dcp_api_types::Instruction::Cmd {
                    args: vec!["/bin/sh".into(), "-c".into(), "echo hello".into()]
                },
            ]
        }
    );

    // A build without the layer cache (the daemon keeps layers between
    // runs): its page streams the log while it runs.
    fill(&c, "#build-tag", "1.0").await;
    click(&c, "#build-no-cache").await;
    click(&c, "#build-start").await;
    let marked = |log: &str| log.lines().any(|l| l.trim() == "built-by-form");
    text_until(&c, "#build-log", Duration::from_secs(60), marked).await;
    let state = attr_of(&c, "#build-state", "data-state").await;
    assert!(
        ["queued", "building"].contains(&state.as_str()),
        "the marker arrived while the build ran (2 s before it ends), not after: {state}"
    );
    element(
        &c,
        Locator::Css("#build-state[data-state='succeeded']"),
        Duration::from_secs(60),
    )
    .await;
    gone(&c, "#build-cancel").await;
    assert!(text_of(&c, "#build-digest").await.starts_with("sha256:"));
    let tag_link = attr_of(&c, "#build-tag-link", "href").await;
    assert!(
        tag_link.ends_with("/images?repository=shop%2Fformed&tag=1.0"),
        "{tag_link}"
    );
    let tags = api
        .get("/api/v1/registry/repositories/shop%2Fformed/tags")
        .await;
    assert_eq!(tags["items"][0]["tag"], "1.0", "{tags}");

    // The page of an ended build reads its whole log.
    let here = c.current_url().await.unwrap();
    c.goto(here.as_str()).await.unwrap();
    element(
        &c,
        Locator::Css("#build-state[data-state='succeeded']"),
        WAIT,
    )
    .await;
    text_until(&c, "#build-log", WAIT, marked).await;

    // The project's history lists it.
    click(&c, "#build-project").await;
    element(
        &c,
        Locator::Css("#builds-table tr.build[data-tag='1.0'][data-state='succeeded']"),
        WAIT,
    )
    .await;

    // A service of that image: its pool's deploy offers the built tag.
    let image = tags_image(&api, "shop/formed", "1.0").await;
    let (status, cluster) = api
        .post("/api/v1/clusters", &serde_json::json!({"name": "formed"}))
        .await;
    assert_eq!(status, 201, "{cluster}");
    let (status, service) = api
        .post(
            "/api/v1/services",
            &serde_json::json!({"cluster_id": cluster["id"], "name": "formed", "image": image}),
        )
        .await;
    assert_eq!(status, 201, "{service}");
    let (status, pool) = api
        .post(
            "/api/v1/pools",
            &serde_json::json!({"service_id": service["id"], "name": "formed-a"}),
        )
        .await;
    assert_eq!(status, 201, "{pool}");
    c.goto(&api.server.url(&format!("/pools/{}", pool["id"])))
        .await
        .unwrap();
    click(&c, "#deploy-pool").await;
    element(&c, Locator::Css("#built-tags option[value='1.0']"), WAIT).await;
    c.close().await.unwrap();
}

/// `host:port/repository:tag` of a tag the registry has.
async fn tags_image(api: &dcp_tests::Api, repository: &str, tag: &str) -> String {
    let detail = api
        .get(&format!(
            "/api/v1/registry/repositories/{}/tags/{tag}",
            repository.replace('/', "%2F")
        ))
        .await;
    detail["pull"].as_str().unwrap().to_owned()
}

/// Waits until the browser's address contains `part`.
async fn address_has(c: &Client, part: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let url = c.current_url().await.unwrap().to_string();
        if url.contains(part) {
            return;
        }
        assert!(Instant::now() < deadline, "{url} never had {part}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cloud_load_balancer_gets_listeners_a_white_list_backends_and_a_unit_in_the_ui() {
    let cloud = dcp_tests::cloud::Cloud::start(dcp_tests::cloud::quick_delays()).await;
    let server = &cloud.api.server;
    let password = server.printed_password.clone().unwrap();
    let (c, _driver) = logged_in(server, &password).await;

    // From the account to its load balancers, region by region (the
    // region is in the address, so the page can be shared).
    click(&c, "nav a[href=\"/accounts\"]").await;
    click(
        &c,
        "tr[data-name=\"sim\"] [data-test=\"account-load-balancers\"]",
    )
    .await;
    until(&c, "//h1[@id='lbs-account'][contains(., 'sim')]", WAIT).await;
    choose(&c, "lb-region", "cn-beijing").await;
    address_has(&c, "region=cn-beijing").await;
    until(
        &c,
        "//p[@class='empty'][contains(., 'No load balancers')]",
        WAIT,
    )
    .await;
    choose(&c, "lb-region", "cn-hangzhou").await;
    address_has(&c, "region=cn-hangzhou").await;

    // Created through the form: a bad spec is refused under its input.
    click(&c, "#new-load-balancer").await;
    fill(&c, "#lb-name", "web").await;
    fill(&c, "#lb-spec", "a b").await;
    click(&c, "#lb-save").await;
    let error = text_of(&c, ".field-error[data-field=\"spec\"]").await;
    assert!(!error.is_empty(), "no error under the spec");
    fill(&c, "#lb-spec", "slb.s1.small").await;
    click(&c, "#lb-save").await;
    gone(&c, "#lb-form").await;
    let row = text_of(&c, "tr[data-test=\"lb-row\"][data-name=\"web\"]").await;
    assert!(
        row.contains("slb.s1.small") && row.contains("active"),
        "{row}"
    );
    assert_eq!(
        c.find_all(Locator::Css("tr[data-test=\"lb-row\"]"))
            .await
            .unwrap()
            .len(),
        1,
        "one load balancer"
    );

    // Its page: a TCP listener on 2222 for the backends' sshd, started.
    click(&c, "tr[data-name=\"web\"] [data-test=\"lb-link\"]").await;
    until(&c, "//*[@id='lb-status'][@data-status='active']", WAIT).await;
    address_has(&c, "region=cn-hangzhou").await;
    click(&c, "#new-listener").await;
    fill(&c, "#listener-port", "2222").await;
    choose(&c, "listener-protocol", "tcp").await;
    fill(&c, "#listener-backend-port", "22").await;
    fill(&c, "#listener-interval", "1").await;
    fill(&c, "#listener-healthy-threshold", "2").await;
    click(&c, "#listener-save").await;
    gone(&c, "#listener-form").await;
    let listener = "tr[data-test=\"listener-row\"][data-port=\"2222\"]";
    let text = text_of(&c, listener).await;
    assert!(text.contains("every 1 s; healthy after 2"), "{text}");
    click(&c, &format!("{listener} [data-test=\"listener-toggle\"]")).await;
    until(
        &c,
        "//tr[@data-test='listener-row'][@data-port='2222'][@data-status='running']",
        WAIT,
    )
    .await;

    // Its white list through the editor: a bad entry is named by its place.
    click(&c, &format!("{listener} [data-test=\"edit-white-list\"]")).await;
    fill(&c, "#white-list-entries", "127.0.0.1\nnope").await;
    click(&c, "#white-list-enabled").await;
    click(&c, "#white-list-save").await;
    let error = text_of(&c, ".field-error[data-field=\"entries\"]").await;
    assert!(error.contains("#2"), "{error}");
    fill(&c, "#white-list-entries", "127.0.0.1\n192.0.2.7").await;
    click(&c, "#white-list-save").await;
    gone(&c, "#white-list-form").await;
    until(
        &c,
        "//tr[@data-port='2222']/td[@data-test='listener-access'][@data-enforced='true']\
         [contains(., '127.0.0.1')][contains(., '192.0.2.7')]",
        WAIT,
    )
    .await;

    // Two instances made its backends in the cloud: the page, left as it
    // is, shows them healthy on 2222 once the cloud's checks pass.
    c.execute("window.dcpNotReloaded = true;", vec![])
        .await
        .unwrap();
    let lb_id = text_of(&c, "[data-test=\"lb-id\"]").await.trim().to_owned();
    assert!(lb_id.starts_with("lb-"), "{lb_id}");
    let instances = cloud.attach_new_instances(&lb_id, 2).await;
    for instance in &instances {
        until(
            &c,
            &format!("//tr[@data-test='backend-row'][@data-instance='{instance}']"),
            WAIT,
        )
        .await;
    }
    let healthy = "//tr[@data-test='backend-row']//*[@data-test='backend-health']\
                   [@data-port='2222'][@data-health='normal']";
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.find_all(Locator::XPath(healthy)).await.unwrap().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the backends never showed healthy: {}",
            text_of(&c, "#backends-table").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        c.execute("return window.dcpNotReloaded === true;", vec![])
            .await
            .unwrap(),
        Value::Bool(true),
        "the page was loaded again"
    );
    let shot = c.screenshot().await.unwrap();
    let _ = std::fs::write(std::env::temp_dir().join("dcp-load-balancer.png"), shot);

    // A discovery unit serves through it: the unit's node is added in the
    // unit's form as a cloud load balancer of this account. The load
    // balancer's page then names the unit and refuses to be deleted.
    dcp_tests::cloud::upload_bundled_for(
        &cloud.api,
        "slb",
        &[cloud.sim.slb_endpoint(), cloud.sim.ecs_endpoint()],
    )
    .await;
    let groups = cloud.api.get("/api/v1/lb-groups").await;
    let (status, unit) = cloud
        .api
        .post(
            "/api/v1/lb-units",
            &json!({"group_id": groups["items"][0]["id"], "name": "slb-web", "plugin": "slb",
                    "config": {"region": "cn-hangzhou", "slb_endpoint": cloud.sim.slb_endpoint(),
                               "ecs_endpoint": cloud.sim.ecs_endpoint(), "timeout_ms": 3000,
                               "load_balancer_id": lb_id, "upstream": "default_upstream"}}),
        )
        .await;
    assert_eq!(status, 201, "{unit}");
    let lb_page = c.current_url().await.unwrap().to_string();
    c.goto(&server.url(&format!("/lb-units/{}", unit["id"])))
        .await
        .unwrap();
    click(&c, "#add-lb-node").await;
    click(&c, "#lb-node-kind-cloud").await;
    choose(&c, "lb-node-account", "sim (aliyun)").await;
    click(&c, "#lb-node-save").await;
    until(
        &c,
        "//tr[@data-test='lb-node'][@data-in-sync='true']//*[@data-test='node-cloud']",
        WAIT,
    )
    .await;
    c.goto(&lb_page).await.unwrap();
    until(
        &c,
        &format!(
            "//*[@data-test='lb-served-by']//a[@href='/lb-units/{}'][contains(., 'slb-web')]",
            unit["id"]
        ),
        WAIT,
    )
    .await;
    click(&c, "#lb-delete").await;
    click(&c, "#confirm-delete").await;
    until(
        &c,
        "//div[@class='dialog'][contains(., 'serves the discovery unit(s) slb-web')]",
        WAIT,
    )
    .await;
    assert_eq!(cloud.sim.load_balancers().len(), 1);
    c.execute(
        "document.querySelector('.dialog button.ghost').click();",
        vec![],
    )
    .await
    .unwrap();
    gone(&c, ".dialog").await;
    let unit = cloud
        .api
        .get(&format!("/api/v1/lb-units/{}", unit["id"]))
        .await;
    let (status, body) = cloud
        .api
        .delete(&format!("/api/v1/lb-nodes/{}", unit["nodes"][0]["id"]))
        .await;
    assert_eq!(status, 204, "{body}");

    // Stopped: its badge says so. Deleted after asking: back to the list,
    // where it is gone.
    click(&c, "#lb-toggle-status").await;
    until(&c, "//*[@id='lb-status'][@data-status='inactive']", WAIT).await;
    click(&c, "#lb-delete").await;
    assert!(text_of(&c, ".dialog").await.contains(&lb_id));
    click(&c, "#confirm-delete").await;
    address_has(&c, "/load-balancers?region=cn-hangzhou").await;
    until(
        &c,
        "//p[@class='empty'][contains(., 'No load balancers')]",
        WAIT,
    )
    .await;
    assert!(cloud.sim.load_balancers().is_empty());
    c.close().await.unwrap();
}
