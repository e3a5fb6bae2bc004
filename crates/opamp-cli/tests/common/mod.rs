//! Runs the built `opamp` binary in a temporary directory.

// Test support: a failed unwrap here is a failed test.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The outcome of one `opamp` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from_output(output: Output) -> Self {
        Self {
            // Killed by a signal has no code; -1 never matches an expected exit code.
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Panics with both streams unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "exit code {} (wanted {code})\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("backtrace"),
            "the command panicked:\n{}",
            self.stderr
        );
        self
    }
}

/// A scratch directory where `opamp` runs.
pub struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Runs `opamp args...` here, with RUST_LOG cleared so the environment cannot change output.
    pub fn opamp(&self, args: &[&str]) -> Run {
        self.opamp_with_env(args, &[])
    }

    pub fn opamp_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_opamp"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG")
            .env_remove("OPAMP_ADMIN_TOKEN")
            .env_remove("OPAMP_ADMIN_URL");
        for (key, value) in env {
            command.env(key, value);
        }
        Run::from_output(command.output().unwrap())
    }

    /// `opamp package keygen` into `dir`; returns the printed key id.
    pub fn keygen(&self, dir: &str, extra: &[&str]) -> String {
        let mut args = vec!["package", "keygen", "--out", dir];
        args.extend_from_slice(extra);
        let run = self.opamp(&args).expect_code(0);
        let key_id = run.stdout.trim().to_owned();
        assert_eq!(key_id.len(), 64, "key id: {key_id:?}");
        assert!(key_id.bytes().all(|b| b.is_ascii_hexdigit()));
        key_id
    }
}

/// Kills the server if a test fails before stopping it.
pub struct ServerProcess(pub std::process::Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stops the supervisor (SIGTERM, so it stops its collector) when the test ends.
pub struct SupervisorProcess(pub std::process::Child);

impl Drop for SupervisorProcess {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `opamp server` (plus `extra` arguments) on ephemeral loopback ports and returns it
/// with its admin URL and agent URL, read from the line it prints once both listeners are up.
pub fn start_server(
    work: &Workdir,
    token: &str,
    extra: &[&str],
) -> (ServerProcess, String, String) {
    let mut args = vec!["server", "--data-dir", "data", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(&["--admin-listen", "127.0.0.1:0", "--admin-token", token]);
    args.extend_from_slice(extra);
    spawn_server(work, &args)
}

/// Runs `opamp ARGS` (a server command) in the work directory, without the caller's
/// `RUST_LOG` or `OPAMP_ADMIN_TOKEN`, and waits for the line it prints once both listeners are
/// up ("opamp server: agents at URL, admin API at URL"); returns it with the admin URL and the
/// agent URL.
pub fn spawn_server(work: &Workdir, args: &[&str]) -> (ServerProcess, String, String) {
    spawn_server_with_env(work, args, &[], std::process::Stdio::null())
}

/// [`spawn_server`] with `env` set in the server's environment and its stderr (the log) sent
/// to `stderr`.
pub fn spawn_server_with_env(
    work: &Workdir,
    args: &[&str],
    env: &[(&str, &str)],
    stderr: std::process::Stdio,
) -> (ServerProcess, String, String) {
    use std::io::BufRead as _;
    let mut command = Command::new(env!("CARGO_BIN_EXE_opamp"));
    command
        .args(args)
        .current_dir(work.root())
        .env_remove("RUST_LOG")
        .env_remove("OPAMP_ADMIN_TOKEN")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr);
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = ServerProcess(child);
    let (lines, ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let line = ready
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the server never reported its listeners");
    let (agents, admin) = line
        .strip_prefix("opamp server: agents at ")
        .and_then(|rest| rest.split_once(", admin API at "))
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    (server, admin.trim().to_owned(), agents.trim().to_owned())
}

/// A collector package: a launcher script running `opamp __test-collector` as `version`.
pub fn launcher(work: &Workdir, version: &str) -> String {
    let name = format!("otelcol-{version}");
    let script = format!(
        "#!/bin/sh\nexec '{}' __test-collector --set-version {version} \"$@\"\n",
        env!("CARGO_BIN_EXE_opamp")
    );
    let path = work.write(&name, script.as_bytes());
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    name
}

/// Starts supervisor `index` on a copy of collector `initial`, connecting to the `endpoint` URL.
pub fn start_supervisor(
    work: &Workdir,
    index: usize,
    endpoint: &str,
    health_port: u16,
    initial: &str,
) -> SupervisorProcess {
    // Each supervisor swaps its own executable in place, so each needs its own copy.
    let executable = work.path(&format!("{initial}-agent-{index}"));
    std::fs::copy(work.path(initial), &executable).unwrap();
    let yaml = format!(
        "server:\n  endpoint: {endpoint}\nagent:\n  executable: '{}'\n  \
         storage_dir: '{}'\n  package_name: otelcol\n  args: [\"--health-port\", \
         \"{health_port}\"]\n  labels:\n    env: test\nhealth:\n  http_url: \
         http://127.0.0.1:{health_port}/health\n  liveness_window: 1s\n  start_timeout: 10s\n  \
         check_interval: 300ms\ntrust:\n  keys:\n    - file: '{}'\nheartbeat_interval: 2s\n",
        executable.display(),
        work.path(&format!("storage-{index}")).display(),
        work.path("keys/release.pub").display(),
    );
    spawn_supervisor(work, index, &yaml)
}

/// Writes `yaml` as supervisor `index`'s config and starts `opamp supervisor` on it.
pub fn spawn_supervisor(work: &Workdir, index: usize, yaml: &str) -> SupervisorProcess {
    let config = format!("supervisor-{index}.yaml");
    work.write(&config, yaml.as_bytes());
    let child = Command::new(env!("CARGO_BIN_EXE_opamp"))
        .args(["supervisor", "--config", &config])
        .current_dir(work.root())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    SupervisorProcess(child)
}

/// Runs the operator command `opamp ARGS --server ADMIN --token TOKEN`.
pub fn operator(work: &Workdir, admin: &str, token: &str, args: &[&str]) -> Run {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--server", admin, "--token", token]);
    work.opamp(&all)
}

/// Signs `file` as otelcol `version` (plus `sign_extra`) and adds it to the catalog at `admin`.
pub fn sign_and_add_package(
    work: &Workdir,
    admin: &str,
    token: &str,
    file: &str,
    version: &str,
    sign_extra: &[&str],
) -> Run {
    let mut sign = vec![
        "package",
        "sign",
        file,
        "--key",
        "keys/release.key",
        "--name",
        "otelcol",
        "--version",
        version,
    ];
    sign.extend_from_slice(sign_extra);
    work.opamp(&sign).expect_code(0);
    let signature = format!("{file}.sig");
    operator(
        work,
        admin,
        token,
        &[
            "package",
            "add",
            file,
            "--name",
            "otelcol",
            "--version",
            version,
            "--signature",
            &signature,
        ],
    )
    .expect_code(0)
}

/// How many `env=test` agents are listed connected, healthy, on otelcol `version`; the listing.
pub fn healthy_on(work: &Workdir, admin: &str, token: &str, version: &str) -> (usize, String) {
    let list = operator(
        work,
        admin,
        token,
        &["agents", "list", "--selector", "env=test"],
    );
    let wanted = format!("otelcol={version}  healthy  yes");
    let count = if list.code == 0 {
        list.stdout.lines().filter(|l| l.contains(&wanted)).count()
    } else {
        0
    };
    (count, list.stdout + &list.stderr)
}

/// Polls `probe` every 200 ms until it holds, failing with its last output after `deadline`.
pub fn wait_until(
    what: &str,
    deadline: std::time::Instant,
    mut probe: impl FnMut() -> (bool, String),
) {
    loop {
        let (done, output) = probe();
        if done {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}:\n{output}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
