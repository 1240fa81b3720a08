//! A broker process of a test's own: RabbitMQ, NATS JetStream or PostgreSQL on a free
//! 127.0.0.1 port with its data in a fresh directory, which the test may stop (cleanly or with
//! SIGKILL) and start again on the same port and data.
//!
//! The shared brokers of a machine serve tests running in parallel and must never be restarted
//! by one of them, so fault tests that restart a broker start one of their own here. Each
//! broker runs in a process group of its own; dropping the handle SIGKILLs that group (and only
//! it) and deletes the data directory, kept instead when the test is failing, for its logs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// How long a start may take before it counts as failed: a RabbitMQ node takes 5-10 s on a
/// small machine, and recovering after a SIGKILL takes longer.
const START_LIMIT: Duration = Duration::from_secs(90);

/// How long a clean stop may take before it counts as failed.
const STOP_LIMIT: Duration = Duration::from_secs(60);

/// Which broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A RabbitMQ node (`rabbitmq-server`, run as the `rabbitmq` user with its Erlang cookie).
    RabbitMq,
    /// `nats-server -js` with file storage.
    Nats,
    /// A PostgreSQL cluster from `initdb`, run as the `postgres` user.
    Postgres,
}

/// How a broker is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// A clean shutdown: SIGTERM (Postgres: SIGINT, its "fast" shutdown, since SIGTERM waits
    /// for every client to leave), awaited until the process exited.
    Clean,
    /// SIGKILL to the broker's whole process group and every process working in its data
    /// directory (a crash: nothing flushed, no goodbye).
    Kill,
}

/// A running (or stopped) broker of the test's own. See the module docs.
#[derive(Debug)]
pub struct OwnBroker {
    kind: Kind,
    port: u16,
    /// RabbitMQ's Erlang distribution port; unused by the others.
    dist_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl OwnBroker {
    /// Creates the data directory and starts the broker; waits until it serves clients.
    /// `Err` names what is missing or failed (the test skips, or fails under CI).
    pub async fn start(kind: Kind) -> Result<OwnBroker, String> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = PathBuf::from(format!("/var/tmp/longshore-own-{kind:?}-{}", &id[..10]));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let mut broker = OwnBroker {
            kind,
            port: free_port()?,
            dist_port: free_port()?,
            dir,
            child: None,
        };
        broker.prepare().await?;
        broker.start_again().await?;
        Ok(broker)
    }

    /// [`OwnBroker::start`], or `None` after printing why it could not start (a missing binary
    /// or user); under `CI=true` that is a failure instead.
    pub async fn start_or_skip(kind: Kind) -> Option<OwnBroker> {
        match OwnBroker::start(kind).await {
            Ok(broker) => Some(broker),
            Err(e) => {
                if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0") {
                    panic!("an own {kind:?} broker is required under CI but did not start: {e}");
                }
                eprintln!("SKIPPED: an own {kind:?} broker did not start ({e}); set CI=true to make this a failure");
                None
            }
        }
    }

    /// The URL longshore connects to.
    pub fn url(&self) -> String {
        match self.kind {
            Kind::RabbitMq => format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port),
            Kind::Nats => format!("nats://127.0.0.1:{}", self.port),
            Kind::Postgres => format!("postgres://postgres@127.0.0.1:{}/postgres", self.port),
        }
    }

    /// The data directory (also holding the broker's log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the broker `how` and waits until its process (for [`Stop::Kill`], all of its
    /// processes) is gone.
    pub async fn stop(&mut self, how: Stop) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let Some(pid) = child.id() else {
            return Ok(());
        };
        match how {
            Stop::Clean => {
                let signal = if self.kind == Kind::Postgres {
                    "INT"
                } else {
                    "TERM"
                };
                signal_pid(signal, &pid.to_string())?;
                match tokio::time::timeout(STOP_LIMIT, child.wait()).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("{:?}: waiting for its exit: {e}", self.kind)),
                    Err(_) => {
                        kill_group(pid);
                        let _ = child.wait().await;
                        Err(format!(
                            "{:?} did not stop within {STOP_LIMIT:?} of SIG{signal}",
                            self.kind
                        ))
                    }
                }
            }
            Stop::Kill => {
                kill_group(pid);
                let _ = child.wait().await;
                // The whole server dies, as in a crash of the machine: besides the group
                // (Erlang helpers), every process working in the data directory, since
                // Postgres backends leave the postmaster's group (setsid) and would otherwise
                // hold its shared memory past the restart.
                let deadline = Instant::now() + STOP_LIMIT;
                loop {
                    let stragglers = pids_working_in(&self.dir);
                    if !group_alive(pid) && stragglers.is_empty() {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        return Err(format!("{:?}: processes outlived SIGKILL", self.kind));
                    }
                    for straggler in stragglers {
                        let _ = signal_pid("KILL", &straggler.to_string());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Starts the broker (again) on the same port and data, and waits until it serves clients.
    pub async fn start_again(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("broker.log"))
            .map_err(|e| format!("broker log: {e}"))?;
        let err = log.try_clone().map_err(|e| format!("broker log: {e}"))?;
        let mut command = self.command()?;
        command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .map_err(|e| format!("{:?}: spawn: {e}", self.kind))?;
        self.child = Some(child);
        self.await_ready().await
    }

    /// Stops the broker `how` and starts it again on the same port and data.
    pub async fn restart(&mut self, how: Stop) -> Result<(), String> {
        self.stop(how).await?;
        self.start_again().await
    }

    /// One-time setup of the data directory.
    async fn prepare(&self) -> Result<(), String> {
        let dir = self.dir.display().to_string();
        match self.kind {
            Kind::Nats => {
                which("nats-server")?;
            }
            Kind::RabbitMq => {
                let server = Path::new(RABBITMQ_SERVER);
                if !server.exists() {
                    return Err(format!("{RABBITMQ_SERVER} is not installed"));
                }
                std::fs::write(
                    self.dir.join("rabbitmq.conf"),
                    format!("listeners.tcp.local = 127.0.0.1:{}\n", self.port),
                )
                .and_then(|()| std::fs::write(self.dir.join("enabled_plugins"), "[].\n"))
                .and_then(|()| std::fs::write(self.dir.join("env.conf"), ""))
                .map_err(|e| format!("rabbitmq config in {dir}: {e}"))?;
                chown_to("rabbitmq", &self.dir).await?;
            }
            Kind::Postgres => {
                let bin = postgres_bin()?;
                chown_to("postgres", &self.dir).await?;
                let data = self.dir.join("data").display().to_string();
                let mut initdb = as_user("postgres", &bin.join("initdb").display().to_string());
                initdb.args(["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8"]);
                let out = tokio::time::timeout(START_LIMIT, initdb.output())
                    .await
                    .map_err(|_| "initdb took over 90 s".to_string())?
                    .map_err(|e| format!("initdb: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "initdb failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
        }
        Ok(())
    }

    /// The broker's command line (the same for every start).
    fn command(&self) -> Result<Command, String> {
        let dir = self.dir.display().to_string();
        let port = self.port.to_string();
        Ok(match self.kind {
            Kind::Nats => {
                let mut c = Command::new(which("nats-server")?);
                c.args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd", &dir]);
                c
            }
            Kind::RabbitMq => {
                let mut c = as_user("rabbitmq", RABBITMQ_SERVER);
                // HOME holds the Erlang cookie the installed tools use; the CONF_ENV_FILE and
                // CONFIG_FILE point away from the installed node's name and port.
                c.current_dir("/var/lib/rabbitmq")
                    .env("HOME", "/var/lib/rabbitmq")
                    .env("RABBITMQ_NODENAME", format!("lso{port}@localhost"))
                    .env("RABBITMQ_NODE_PORT", &port)
                    .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
                    .env("RABBITMQ_CONFIG_FILE", format!("{dir}/rabbitmq.conf"))
                    .env("RABBITMQ_CONF_ENV_FILE", format!("{dir}/env.conf"))
                    .env(
                        "RABBITMQ_ENABLED_PLUGINS_FILE",
                        format!("{dir}/enabled_plugins"),
                    )
                    .env("RABBITMQ_MNESIA_BASE", format!("{dir}/mnesia"))
                    .env("RABBITMQ_LOG_BASE", format!("{dir}/log"))
                    .env("ERL_EPMD_ADDRESS", "127.0.0.1");
                c
            }
            Kind::Postgres => {
                let bin = postgres_bin()?.join("postgres").display().to_string();
                let mut c = as_user("postgres", &bin);
                c.args(["-D", &format!("{dir}/data"), "-p", &port, "-k", &dir]);
                c.args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=on"]);
                c
            }
        })
    }

    /// Waits (bounded) until the broker serves clients, failing early if it exited.
    async fn await_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_LIMIT;
        let addr = format!("127.0.0.1:{}", self.port);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "{:?} exited while starting ({status}); log in {}",
                        self.kind,
                        self.dir.display()
                    ));
                }
            }
            if self.ready(&addr).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{:?} did not serve {addr} within {START_LIMIT:?}; log in {}",
                    self.kind,
                    self.dir.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the broker serves clients now: Postgres past recovery (`pg_isready`), the
    /// others listening (RabbitMQ opens its listener last in its boot).
    async fn ready(&self, addr: &str) -> bool {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return false;
        }
        if self.kind != Kind::Postgres {
            return true;
        }
        let Ok(bin) = postgres_bin() else {
            return false;
        };
        let port = self.port.to_string();
        Command::new(bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success())
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            kill_group(pid);
        }
        for pid in pids_working_in(&self.dir) {
            let _ = signal_pid("KILL", &pid.to_string());
        }
        if std::thread::panicking() {
            eprintln!(
                "own {:?} broker's data and log kept in {}",
                self.kind,
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// A port nothing listens on right now.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// `name` on PATH or in /usr/sbin.
fn which(name: &str) -> Result<PathBuf, String> {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{name} is not installed"))
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb`.
fn postgres_bin() -> Result<PathBuf, String> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "no /usr/lib/postgresql (PostgreSQL server not installed)".to_string())?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no initdb under /usr/lib/postgresql".to_string())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

/// `program` run as `user` when this process is root (RabbitMQ needs its cookie's owner;
/// initdb and postgres refuse root), else as this user.
fn as_user(user: &str, program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={user}"),
            &format!("--regid={user}"),
            "--init-groups",
            program,
        ]);
        c
    } else {
        Command::new(program)
    }
}

/// Gives `dir` to `user` when root (the broker runs as that user).
async fn chown_to(user: &str, dir: &Path) -> Result<(), String> {
    if !is_root() {
        return Ok(());
    }
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{user}:{user}"))
        .arg(dir)
        .status()
        .await
        .map_err(|e| format!("chown: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "chown {user} {} failed (no {user} user?)",
            dir.display()
        ))
    }
}

fn signal_pid(signal: &str, target: &str) -> Result<(), String> {
    let status = std::process::Command::new("kill")
        .args(["-s", signal, "--", target])
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("kill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -s {signal} {target} failed"))
    }
}

/// SIGKILL to the process group led by `pid` (the broker was started as its leader).
fn kill_group(pid: u32) {
    let _ = signal_pid("KILL", &format!("-{pid}"));
}

fn group_alive(pid: u32) -> bool {
    signal_pid("0", &format!("-{pid}")).is_ok()
}

/// Live processes whose working directory is inside `dir` (a broker's data directory is unique
/// to one [`OwnBroker`], so these are its server processes and no one else's).
fn pids_working_in(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_string_lossy().parse().ok()?;
            let cwd = std::fs::read_link(e.path().join("cwd")).ok()?;
            cwd.starts_with(dir).then_some(pid)
        })
        .collect()
}
