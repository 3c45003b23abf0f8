//! A server-sent event stream as a client reads it (task and build events).

use std::time::{Duration, Instant};

use serde_json::Value;

/// An open event stream.
#[derive(Debug)]
pub struct Events {
    reply: reqwest::Response,
    buffer: Vec<u8>,
}

impl Events {
    /// Opens `path` (e.g. `/api/v1/tasks/7/events`) on `base_url` with
    /// `token`.
    pub async fn open(base_url: &str, token: &str, path: &str) -> Self {
        let reply = reqwest::Client::new()
            .get(format!("{base_url}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
        assert_eq!(reply.headers()["content-type"], "text/event-stream");
        Self {
            reply,
            buffer: Vec::new(),
        }
    }

    /// The next event's name and data; `None` when the stream ended cleanly.
    pub async fn next(&mut self, within: Duration) -> Option<(String, Value)> {
        let deadline = Instant::now() + within;
        loop {
            // Blocks end at a blank line; a chunk may split one anywhere,
            // even inside a character, so bytes are kept until it is whole.
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let block = String::from_utf8(block).unwrap();
                let name = block.lines().find_map(|l| l.strip_prefix("event: "));
                let data: String = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                // Blocks without a name are keep-alive comments.
                if let Some(name) = name {
                    return Some((name.to_owned(), serde_json::from_str(&data).unwrap()));
                }
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.reply.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within {within:?}"))
                .expect("the stream ends cleanly, not cut");
            match chunk {
                Some(bytes) => self.buffer.extend_from_slice(&bytes),
                None => return None,
            }
        }
    }
}
