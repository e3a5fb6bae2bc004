//! Measures the web dashboard under a load tool's fleet: page load times (full HTML answer,
//! as a browser's first request sees it) and the Server-Sent Events traffic of its live pages.

// Load-tool code: a failed unwrap ends the run with its message.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use reqwest::redirect::Policy;
use tokio::task::JoinHandle;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// Signs in at `base` (`http://host:port`) with `token`; returns the session cookie.
pub async fn sign_in(base: &str, token: &str) -> String {
    let answer = client()
        .post(format!("{base}/ui/login"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    let cookie = answer.headers()["set-cookie"].to_str().unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

/// One page's load: median and worst of `rounds` loads, and the HTML size.
#[derive(Debug)]
pub struct PageLoad {
    /// Path and query.
    pub path: String,
    /// Median time to the whole answer.
    pub median: Duration,
    /// Slowest load.
    pub worst: Duration,
    /// Bytes of HTML.
    pub bytes: usize,
}

/// Loads each of `paths` `rounds` times, one after another.
pub async fn time_pages(base: &str, cookie: &str, paths: &[&str], rounds: usize) -> Vec<PageLoad> {
    let http = client();
    let mut loads = Vec::new();
    for path in paths {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..rounds {
            let started = Instant::now();
            let answer = http
                .get(format!("{base}{path}"))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            assert!(answer.status().is_success(), "{path}: {}", answer.status());
            bytes = answer.text().await.unwrap().len();
            times.push(started.elapsed());
        }
        times.sort();
        loads.push(PageLoad {
            path: (*path).to_owned(),
            median: times[times.len() / 2],
            worst: times[times.len() - 1],
            bytes,
        });
    }
    loads
}

/// What one live stream delivered.
#[derive(Debug, Default)]
pub struct StreamTraffic {
    /// Events received (keep-alive comments not counted).
    pub events: usize,
    /// Bytes received, keep-alives included.
    pub bytes: usize,
    /// How long it was open.
    pub open_for: Duration,
}

/// Follows the event stream at `path` until it ends (or the task is aborted); the handle
/// answers what arrived.
pub fn follow(
    base: &str,
    cookie: &str,
    path: &str,
) -> (JoinHandle<()>, tokio::sync::watch::Receiver<StreamTraffic>) {
    let (sender, receiver) = tokio::sync::watch::channel(StreamTraffic::default());
    let request = client()
        .get(format!("{base}{path}"))
        .header("cookie", cookie);
    let task = tokio::spawn(async move {
        let started = Instant::now();
        let answer = request.send().await.unwrap();
        let mut body = answer.bytes_stream();
        while let Some(Ok(chunk)) = body.next().await {
            let events = chunk
                .split(|b| *b == b'\n')
                .filter(|line| line.starts_with(b"event:"))
                .count();
            sender.send_modify(|traffic| {
                traffic.events += events;
                traffic.bytes += chunk.len();
                traffic.open_for = started.elapsed();
            });
        }
    });
    (task, receiver)
}
