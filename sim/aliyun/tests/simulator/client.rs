//! Helpers shared by the tests; the signed client is the simulator's own
//! (`aliyun_sim::client`).

use std::time::Duration;

use aliyun_sim::{Delays, Options, Simulator};

pub(crate) use aliyun_sim::client::*;

/// Delays short enough for tests, long enough to observe each state.
pub(crate) fn quick() -> Delays {
    Delays {
        pending: Duration::from_millis(150),
        starting: Duration::from_millis(150),
        stopping: Duration::from_millis(150),
        deleting: Duration::from_millis(150),
    }
}

/// A simulator with quick delays and tidy answers (no quirks), so tests can
/// compare numbers exactly.
pub(crate) async fn start(options: Options) -> Simulator {
    Simulator::start(Options {
        delays: quick(),
        quirks: false,
        ..options
    })
    .await
    .expect("starting the simulator")
}
