//! The fleet server killed with SIGKILL mid-rollout, for real, and restarted on the same data
//! directory and ports.
//!
//! The server runs in a child process: this test binary re-executed with `--ignored --exact
//! fleet_server_child_entry`, which starts `FleetServer` and prints its addresses. The agents
//! (WebSocket and plain-HTTP) run in the parent, so they live through every crash and
//! reconnect on their own. The parent
//! kills the child during the canary wave, during its bake, and during two batch waves, and
//! checks at the end that the rollout completed, every agent runs the target and the server
//! says so, nobody was offered anything outside the plan, and the store audited every install.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic fails the test

mod fleet_support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use fleet_support::proxy::{FaultProxy, chaos};
use fleet_support::{
    PACKAGE, WAIT, admin, assert_converged, config, request, spawn_fleet, stop_all, upload,
    wait_connected_at, wait_rollout,
};
use opamp_fleet::admin::RolloutView;
use opamp_fleet::{FleetServer, RolloutStatus};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

const CHILD_ENV: &str = "OPAMP_FAULT_FLEET_SERVER";

/// The server process: runs only when re-executed by the tests below (`--ignored`), with
/// `<data_dir>\n<opamp addr>\n<admin addr>[\n<public url>]` in [`CHILD_ENV`]; serves until
/// killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process entry of fault_server_kill; started by the tests"]
async fn fleet_server_child_entry() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut lines = spec.lines();
    let data_dir = lines.next().unwrap().to_owned();
    let listen: SocketAddr = lines.next().unwrap().parse().unwrap();
    let admin_listen: SocketAddr = lines.next().unwrap().parse().unwrap();
    let mut settings = config(Path::new(&data_dir), listen, admin_listen);
    settings.public_url = lines
        .next()
        .filter(|url| !url.is_empty())
        .map(str::to_owned);
    let server = FleetServer::start(settings).await.unwrap();
    println!("READY {} {}", server.opamp_addr(), server.admin_addr());
    std::future::pending::<()>().await;
}

/// A server child process and the addresses it listens on.
struct ServerProcess {
    child: Child,
    opamp: SocketAddr,
    admin: SocketAddr,
}

impl ServerProcess {
    /// Starts the server on `data_dir` (ports 0 pick free ones) and waits until it listens.
    async fn start(data_dir: &Path, opamp: SocketAddr, admin: SocketAddr, run: u32) -> Self {
        Self::start_with(data_dir, opamp, admin, "", run).await
    }

    /// As [`Self::start`], with download URLs under `public_url` (empty: the listener's).
    async fn start_with(
        data_dir: &Path,
        opamp: SocketAddr,
        admin: SocketAddr,
        public_url: &str,
        run: u32,
    ) -> Self {
        let stderr = std::fs::File::create(data_dir.join(format!("server-{run}.stderr"))).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "fleet_server_child_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                CHILD_ENV,
                format!("{}\n{opamp}\n{admin}\n{public_url}", data_dir.display()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let ready = async {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(line) = lines.next_line().await.unwrap() {
                // libtest prints "test <name> ... " before the child's own output on the same line.
                if let Some((_, rest)) = line.split_once("READY ") {
                    let (opamp, admin) = rest.split_once(' ').unwrap();
                    return (opamp.parse().unwrap(), admin.parse().unwrap());
                }
            }
            panic!("the server child exited before listening (see server-{run}.stderr)");
        };
        let Ok((opamp, admin)) = tokio::time::timeout(WAIT, ready).await else {
            let log = data_dir.join(format!("server-{run}.stderr"));
            panic!(
                "server run {run} did not listen in time: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        };
        ServerProcess {
            child,
            opamp,
            admin,
        }
    }

    /// SIGKILL, then reap it.
    async fn kill(&mut self) {
        self.child.kill().await.unwrap();
    }
}

/// Agents that run the target (installed, or installed and healthy).
fn moved(view: &RolloutView) -> u32 {
    view.progress.installed + view.progress.healthy
}

/// A point of the rollout at which the server is killed.
struct KillPoint {
    name: &'static str,
    reached: fn(&RolloutView) -> bool,
}

const KILL_POINTS: [KillPoint; 4] = [
    KillPoint {
        name: "canary installing",
        reached: |v| v.status == RolloutStatus::Canary && v.progress.offered > 0,
    },
    KillPoint {
        name: "canary baking",
        reached: |v| v.status == RolloutStatus::Baking && moved(v) < v.progress.total,
    },
    KillPoint {
        name: "first batch installing",
        reached: |v| v.status == RolloutStatus::Batch,
    },
    KillPoint {
        name: "later batch installing",
        reached: |v| v.status == RolloutStatus::Batch && moved(v) * 2 >= v.progress.total,
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_during_canary_bake_and_batches_restarts_and_the_rollout_completes() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut server = ServerProcess::start(&data_dir, any, any, 0).await;
    let (opamp, admin_addr) = (server.opamp, server.admin);
    let client = admin(admin_addr);
    upload(&client, dir.path(), "1.0.0").await;
    upload(&client, dir.path(), "2.0.0").await;
    // Ten agents in the plan, two that the selector leaves out.
    let agents = spawn_fleet(opamp, 10, 2, Duration::from_millis(400));
    wait_connected_at(&client, 12, "1.0.0").await;

    let rollout = client
        .create_rollout(&request("2.0.0", Duration::from_millis(1500)))
        .await
        .unwrap();
    let id = rollout.id.to_string();
    assert_eq!(rollout.progress.total, 10);
    assert_eq!(rollout.spec.package_name, PACKAGE);

    for (run, point) in (1..).zip(KILL_POINTS.iter()) {
        let view = wait_rollout(&client, &id, point.name, point.reached).await;
        server.kill().await;
        eprintln!(
            "killed the server at '{}': status {}, {}/{} installed",
            point.name,
            view.status.as_str(),
            moved(&view),
            view.progress.total
        );
        server = ServerProcess::start(&data_dir, opamp, admin_addr, run).await;
        assert_eq!((server.opamp, server.admin), (opamp, admin_addr));
    }

    assert_converged(&client, &id, &agents, "2.0.0").await;
    stop_all(agents).await;
    server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_during_canary_and_while_reverting_an_abort_finishes_the_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut server = ServerProcess::start(&data_dir, any, any, 0).await;
    let (opamp, admin_addr) = (server.opamp, server.admin);
    let client = admin(admin_addr);
    upload(&client, dir.path(), "1.0.0").await;
    upload(&client, dir.path(), "2.0.0").await;
    let agents = spawn_fleet(opamp, 6, 1, Duration::from_millis(400));
    wait_connected_at(&client, 7, "1.0.0").await;

    let mut request = request("2.0.0", Duration::from_secs(3600));
    request.canary_share = Some(0.34);
    let rollout = client.create_rollout(&request).await.unwrap();
    let id = rollout.id.to_string();

    let view = wait_rollout(&client, &id, "canary installing", |v| {
        v.status == RolloutStatus::Canary && v.progress.offered > 0
    })
    .await;
    server.kill().await;
    eprintln!("killed the server during the canary: {:?}", view.progress);
    server = ServerProcess::start(&data_dir, opamp, admin_addr, 1).await;

    // The operator aborts while the canaries bake; the server dies while reverting them.
    wait_rollout(&client, &id, "canary baking", |v| {
        v.status == RolloutStatus::Baking
    })
    .await;
    let aborted = client.abort(&id, "fault test").await.unwrap();
    assert_eq!(aborted.status, RolloutStatus::Aborting);
    let view = wait_rollout(&client, &id, "a revert under way", |v| {
        v.status == RolloutStatus::Aborting
    })
    .await;
    server.kill().await;
    eprintln!("killed the server while aborting: {:?}", view.progress);
    server = ServerProcess::start(&data_dir, opamp, admin_addr, 2).await;

    assert_eq!(
        fleet_support::wait_terminal(&client, &id).await,
        RolloutStatus::RolledBack
    );
    let view = client.rollout(&id).await.unwrap();
    let canaries: Vec<_> = view.agents.iter().filter(|a| a.wave == 0).collect();
    assert!(canaries.len() >= 2, "{canaries:?}");
    fleet_support::poll("every agent back on 1.0.0 in the server's view", || async {
        let records = client.agents().await.ok()?;
        let back = records.len() == 7
            && records
                .iter()
                .all(|r| r.package_versions.get(PACKAGE) == Some("1.0.0"));
        back.then_some(())
    })
    .await;
    let audit = client.audit(Some(&id)).await.unwrap();
    for agent in &agents {
        assert_eq!(agent.version(), "1.0.0");
        let offered = agent.offered();
        if canaries.iter().any(|c| c.uid == agent.uid) {
            assert!(offered.contains(&"2.0.0".to_owned()), "{offered:?}");
            assert!(
                offered.iter().all(|v| v == "2.0.0" || v == "1.0.0"),
                "{offered:?}"
            );
            let reverted = audit.iter().any(|a| {
                a.record.action.kind() == "agent_reverted"
                    && a.record.action.agent() == Some(agent.uid)
            });
            assert!(reverted, "no revert audited for canary {}", agent.uid);
        } else {
            assert!(offered.is_empty(), "{} offered {offered:?}", agent.uid);
        }
    }
    let kinds: Vec<&str> = audit.iter().map(|a| a.record.action.kind()).collect();
    for kind in ["aborted", "rolled_back"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    stop_all(agents).await;
    server.kill().await;
}

/// Kills at moments no status marks (mid-offer, mid-SQLite write, between an agent's report
/// and its audit record): random delays from a seed (`OPAMP_FAULT_SEED`, default 7). The
/// delays only choose when the fault lands; every check still waits for events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_at_seeded_random_moments_still_converges() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = std::env::var("OPAMP_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut server = ServerProcess::start(&data_dir, any, any, 0).await;
    let (opamp, admin_addr) = (server.opamp, server.admin);
    let client = admin(admin_addr);
    upload(&client, dir.path(), "1.0.0").await;
    upload(&client, dir.path(), "2.0.0").await;
    let agents = spawn_fleet(opamp, 8, 1, Duration::from_millis(200));
    wait_connected_at(&client, 9, "1.0.0").await;
    let rollout = client
        .create_rollout(&request("2.0.0", Duration::from_millis(300)))
        .await
        .unwrap();
    let id = rollout.id.to_string();

    let mut kills = 0;
    for run in 1..=6 {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..700))).await;
        server.kill().await;
        kills += 1;
        server = ServerProcess::start(&data_dir, opamp, admin_addr, run).await;
        let view = wait_rollout(&client, &id, "the restarted server answering", |_| true).await;
        eprintln!(
            "seed {seed}: after kill {kills} the restarted server shows {}, {}/{} moved",
            view.status.as_str(),
            moved(&view),
            view.progress.total
        );
        if view.status.is_terminal() {
            break;
        }
    }
    assert!(kills >= 1);
    assert_converged(&client, &id, &agents, "2.0.0").await;
    stop_all(agents).await;
    server.kill().await;
}

/// Everything at once: agents and downloads go through the faulty proxy (seeded drops, delays,
/// black holes) while the server behind it is SIGKILLed and restarted three times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_kills_and_network_faults_together_still_converge() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let proxy = FaultProxy::start().await;
    let public_url = format!("http://{}", proxy.addr());
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut server = ServerProcess::start_with(&data_dir, any, any, &public_url, 0).await;
    let (opamp, admin_addr) = (server.opamp, server.admin);
    proxy.set_upstream(opamp);
    let client = admin(admin_addr);
    upload(&client, dir.path(), "1.0.0").await;
    upload(&client, dir.path(), "2.0.0").await;
    let agents = spawn_fleet(proxy.addr(), 8, 1, Duration::from_millis(300));
    wait_connected_at(&client, 9, "1.0.0").await;
    let rollout = client
        .create_rollout(&request("2.0.0", Duration::from_millis(500)))
        .await
        .unwrap();
    let id = rollout.id.to_string();

    let stop = CancellationToken::new();
    let network = chaos(&proxy, 5, stop.clone());
    let kills = async {
        let points = [
            KillPoint {
                name: "canary",
                reached: |v| v.status == RolloutStatus::Canary,
            },
            KillPoint {
                name: "first bake",
                reached: |v| v.status == RolloutStatus::Baking,
            },
            KillPoint {
                name: "a batch",
                reached: |v| v.status == RolloutStatus::Batch,
            },
        ];
        for (run, point) in (1..).zip(points) {
            wait_rollout(&client, &id, point.name, point.reached).await;
            server.kill().await;
            server =
                ServerProcess::start_with(&data_dir, opamp, admin_addr, &public_url, run).await;
        }
        fleet_support::wait_terminal(&client, &id).await;
        stop.cancel();
    };
    let (log, ()) = tokio::join!(network, kills);
    eprintln!(
        "{log:?}; proxy accepted {} connections, dropped {}",
        proxy.accepted(),
        proxy.dropped()
    );
    assert_converged(&client, &id, &agents, "2.0.0").await;
    stop_all(agents).await;
    server.kill().await;
}
