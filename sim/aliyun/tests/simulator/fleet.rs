//! Fleet mode: every running instance is a real `sshd` (needs root and
//! OpenSSH, as DCP's machine tests do).

use std::{
    net::Ipv4Addr,
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use aliyun_sim::{FleetOptions, Options, Simulator};

use crate::client::{Client, ids, start};

fn keygen(path: &Path) -> String {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "fleet-test", "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read_to_string(path.with_extension("pub")).unwrap()
}

fn ssh(key: &Path, known_hosts: &Path, strict: &str, ip: Ipv4Addr, command: &str) -> Output {
    Command::new("ssh")
        .arg("-i")
        .arg(key)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args(["-o", &format!("StrictHostKeyChecking={strict}")])
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=5",
        ])
        .arg(format!("root@{ip}"))
        .arg(command)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Whether something accepts TCP on `ip:22` within a short wait.
async fn listening(ip: Ipv4Addr) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect((ip, 22))
        )
        .await,
        Ok(Ok(_))
    )
}

/// Whether `ip:22` stops accepting within a few seconds (a killed sshd
/// takes a moment to disappear).
async fn closes(ip: Ipv4Addr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while listening(ip).await {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

async fn fleet(dir: &Path) -> Simulator {
    start(Options {
        fleet: Some(FleetOptions {
            dir: dir.to_path_buf(),
        }),
        ..Options::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_instance_is_an_sshd_that_trusts_its_key_pair() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    let known_hosts = dir.path().join("known_hosts");
    let public_key = keygen(&key);
    let sim = fleet(&dir.path().join("fleet")).await;
    let ecs = Client::ecs(&sim);
    ecs.call(
        "ImportKeyPair",
        &[
            ("RegionId", "cn-hangzhou"),
            ("KeyPairName", "fleet-test"),
            ("PublicKeyBody", &public_key),
        ],
    )
    .await
    .ok();
    let id = ids(&ecs
        .run(&[
            ("KeyPairName", "fleet-test"),
            ("InternetMaxBandwidthOut", "1"),
        ])
        .await
        .ok())
    .remove(0);
    ecs.wait_status(&id, "Running").await;
    let view = sim.instances().remove(0);
    let (private, public) = (view.private_ip, view.public_ip.unwrap());

    // Reported Running means it already accepts connections. The session
    // got `SetEnv SHLVL=1`, so bash counts itself one level deeper (and so
    // skips root's .bashrc).
    let out = ssh(
        &key,
        &known_hosts,
        "accept-new",
        private,
        "echo $SHLVL; whoami",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2\nroot\n");
    let out = ssh(&key, &known_hosts, "accept-new", public, "true");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A session open while the instance stops dies with it.
    let mut session = Command::new("ssh")
        .arg("-i")
        .arg(&key)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
        .arg(format!("root@{private}"))
        .arg("sleep 60")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(session.try_wait().unwrap().is_none(), "the session is up");

    ecs.call("StopInstance", &[("InstanceId", &id)]).await.ok();
    assert!(closes(private).await, "Stopping: sshd is down");
    let deadline = Instant::now() + Duration::from_secs(10);
    while session.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the ssh session outlived the instance"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ecs.wait_status(&id, "Stopped").await;

    // Started again: same host key (StrictHostKeyChecking=yes), same login.
    ecs.call("StartInstance", &[("InstanceId", &id)]).await.ok();
    ecs.wait_status(&id, "Running").await;
    let out = ssh(&key, &known_hosts, "yes", private, "true");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Another key gets nowhere.
    let stranger = dir.path().join("stranger");
    keygen(&stranger);
    let out = ssh(&stranger, &known_hosts, "yes", private, "true");
    assert!(!out.status.success());

    ecs.call("DeleteInstance", &[("InstanceId", &id), ("Force", "true")])
        .await
        .ok();
    assert!(
        closes(private).await && closes(public).await,
        "deleted: sshd is gone"
    );
    ecs.wait_gone(&id).await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_kills_every_sshd() {
    let dir = tempfile::tempdir().unwrap();
    let sim = fleet(dir.path()).await;
    let ecs = Client::ecs(&sim);
    // Password-only: an sshd nobody can log in to, but it runs.
    let created = ecs
        .run(&[("Amount", "2"), ("Password", "Dcp-Sim-2024")])
        .await
        .ok();
    let ids = ids(&created);
    for id in &ids {
        ecs.wait_status(id, "Running").await;
    }
    let ips: Vec<Ipv4Addr> = sim.instances().iter().map(|i| i.private_ip).collect();
    for ip in &ips {
        assert!(listening(*ip).await, "{ip}");
    }
    let config = std::fs::read_to_string(dir.path().join(&ids[0]).join("sshd_config")).unwrap();
    for line in [
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "SetEnv SHLVL=1",
        "MaxStartups 100",
    ] {
        assert!(config.contains(line), "{line} in {config}");
    }
    sim.shutdown().await;
    for ip in &ips {
        assert!(closes(*ip).await, "{ip} still listening after shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_simulator_kills_its_sshds_too() {
    let dir = tempfile::tempdir().unwrap();
    let sim = fleet(dir.path()).await;
    let ecs = Client::ecs(&sim);
    let id = ids(&ecs.run(&[]).await.ok()).remove(0);
    ecs.wait_status(&id, "Running").await;
    let ip = sim.instances()[0].private_ip;
    assert!(listening(ip).await);
    drop(sim);
    assert!(closes(ip).await, "{ip} outlived its simulator");
}
