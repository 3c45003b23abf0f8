//! The test fleet itself: real sshd hosts on their own loopback addresses,
//! reachable with the generated key, gone when the fleet is dropped.

#![allow(clippy::unwrap_used)]

use std::net::TcpStream;

use dcp_tests::fleet::Fleet;

#[test]
fn a_fleet_of_sshd_hosts_answers_on_loopback_and_goes_away() {
    let fleet = Fleet::start(3);
    let ips: Vec<String> = fleet.hosts.iter().map(|h| h.ip().to_string()).collect();
    assert_eq!(ips.len(), 3);
    assert!(ips.iter().all(|ip| ip.starts_with("127.20.")), "{ips:?}");
    let unique: std::collections::BTreeSet<_> = ips.iter().collect();
    assert_eq!(unique.len(), 3, "each host has its own address");
    for i in 0..3 {
        let out = fleet.ssh(i, "echo hi from $(hostname -I 2>/dev/null || echo host)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("hi from"));
    }
    let addrs: Vec<_> = fleet.hosts.iter().map(|h| h.addr).collect();
    drop(fleet);
    for addr in addrs {
        assert!(TcpStream::connect(addr).is_err(), "{addr} still answers");
    }
}
