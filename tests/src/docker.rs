//! Docker for orchestration tests: a tiny web image built locally (nothing
//! can be pulled here) and the containers DCP ran, found by label.

use std::{
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Command, Stdio},
    sync::Mutex,
};

static BUILD: Mutex<()> = Mutex::new(());

/// Builds `dcp-test/web:<tag>`: Debian's static busybox (also as
/// `/bin/sh`, so shell-form RUN steps built on it work) serving
/// `/www/index.html`, which says `web <tag>`, `/www/healthz` and
/// `/cgi-bin/whoami` (see [`hostnames_by_address`]) on port 80,
/// logging every request (`response:200`).
///
/// # Panics
/// When Docker or busybox-static (scripts/setup test installs both) is missing.
#[must_use]
pub fn web_image(tag: &str) -> String {
    web_image_with(tag, true)
}

/// [`web_image`], with `/healthz` only when `healthy`: a tag whose health
/// check never passes though it serves its page.
///
/// # Panics
/// When Docker or busybox-static (scripts/setup test installs both) is missing.
#[must_use]
pub fn web_image_with(tag: &str, healthy: bool) -> String {
    let image = format!("dcp-test/web:{tag}");
    // Built every time (Docker's cache makes it quick), so an image of that
    // name left by something else is replaced.
    let _one_at_a_time = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "no /bin/busybox: scripts/setup test installs busybox-static"
    );
    // One layer holds busybox and its /bin/sh (a hard link to it).
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    std::fs::copy(busybox, dir.path().join("bin/busybox")).unwrap();
    std::fs::hard_link(dir.path().join("bin/busybox"), dir.path().join("bin/sh")).unwrap();
    std::fs::create_dir(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("www/index.html"), format!("web {tag}\n")).unwrap();
    if healthy {
        std::fs::write(dir.path().join("www/healthz"), "ok\n").unwrap();
    }
    // `/cgi-bin/whoami` answers the container's host name (the short id),
    // so a test can tell which container a balancer that does not name its
    // backend (a cloud load balancer) sent a request to.
    std::fs::create_dir(dir.path().join("www/cgi-bin")).unwrap();
    let whoami = dir.path().join("www/cgi-bin/whoami");
    std::fs::write(
        &whoami,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\n/bin/busybox cat /etc/hostname\n",
    )
    .unwrap();
    std::fs::set_permissions(&whoami, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY bin /bin\nCOPY www /www\nEXPOSE 80\n\
         ENTRYPOINT [\"/bin/busybox\", \"httpd\", \"-f\", \"-v\", \"-p\", \"80\", \"-h\", \"/www\"]\n",
    )
    .unwrap();
    docker(&[
        "build",
        "-q",
        "-t",
        &image,
        &dir.path().display().to_string(),
    ])
    .unwrap_or_else(|e| panic!("building {image}: {e}"));
    image
}

/// Names of the containers (running or not) labelled `dcp.service=<service>`.
#[must_use]
pub fn containers_of(service: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=dcp.service={service}"),
        "--format",
        "{{.Names}}",
    ])
    .unwrap_or_else(|e| panic!("docker ps: {e}"))
    .lines()
    .map(str::to_owned)
    .collect()
}

/// The running containers of `service` by the address their first
/// published port is bound to: that address (a node's) and the
/// container's host name, which `/cgi-bin/whoami` answers.
#[must_use]
pub fn hostnames_by_address(service: &str) -> std::collections::BTreeMap<String, String> {
    let ids = docker(&[
        "ps",
        "--filter",
        &format!("label=dcp.service={service}"),
        "--format",
        "{{.ID}}",
    ])
    .unwrap_or_else(|e| panic!("docker ps: {e}"));
    ids.lines()
        .filter_map(|id| {
            let out = docker(&[
                "inspect",
                "-f",
                "{{range $p, $b := .HostConfig.PortBindings}}{{range $b}}{{.HostIp}} {{end}}{{end}}{{.Config.Hostname}}",
                id,
            ])
            .ok()?;
            let mut words: Vec<&str> = out.split_whitespace().collect();
            let hostname = words.pop()?.to_owned();
            Some((words.first()?.to_string(), hostname))
        })
        .collect()
}

/// Removes the containers of `service` (when dropped, too).
pub struct Cleanup(pub String);

impl Cleanup {
    /// Removes what an earlier run may have left, then guards `service`.
    #[must_use]
    pub fn new(service: &str) -> Self {
        let cleanup = Self(service.to_owned());
        cleanup.remove();
        cleanup
    }

    fn remove(&self) {
        let names = containers_of(&self.0);
        if !names.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(names.iter().map(String::as_str));
            let _ = docker(&args);
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.remove();
    }
}

fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("running docker (scripts/docker start): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `docker` with a client configuration of its own in `config` (where a
/// `docker login` keeps its credentials, away from the machine's), with
/// `stdin` fed to it.
///
/// # Errors
/// docker's stderr when it fails.
pub fn docker_in(config: &Path, args: &[&str], stdin: &str) -> Result<String, String> {
    let mut child = Command::new("docker")
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running docker (scripts/docker start): {e}"))?;
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Logs a docker client (its configuration in a new directory) in to
/// DCP's registry with the login `GET /api/v1/registry/login` hands out,
/// and pushes each `(local image, repository:tag)`; answers the client's
/// directory and the registry's host.
///
/// # Panics
/// When the login or a push fails.
pub async fn push_to_registry(
    api: &crate::Api,
    pushes: &[(&str, &str)],
) -> (tempfile::TempDir, String) {
    let login = api.get("/api/v1/registry/login").await;
    let server = login["server"].as_str().expect("a login").to_owned();
    let client = tempfile::tempdir().unwrap();
    docker_in(
        client.path(),
        &[
            "login",
            &server,
            "-u",
            login["username"].as_str().unwrap(),
            "--password-stdin",
        ],
        login["password"].as_str().unwrap(),
    )
    .unwrap_or_else(|e| panic!("docker login {server}: {e}"));
    for (image, target) in pushes {
        let target = format!("{server}/{target}");
        docker_in(client.path(), &["tag", image, &target], "").unwrap();
        docker_in(client.path(), &["push", &target], "")
            .unwrap_or_else(|e| panic!("docker push {target}: {e}"));
    }
    (client, server)
}
