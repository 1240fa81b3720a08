//! Typed errors in bounded time: unreachable server, bad credentials, JetStream disabled,
//! missing stream permission. The last three start throwaway nats-servers on free
//! 127.0.0.1 ports (killed at the end of each test).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use longshore_core::{Broker, Error, Message};
use longshore_nats::{NatsBroker, NatsConfig};

fn nats_server() -> Option<PathBuf> {
    let candidates = [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ];
    if let Some(p) = candidates.iter().map(PathBuf::from).find(|p| p.exists()) {
        return Some(p);
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(!ci, "nats-server binary is required under CI");
    eprintln!("SKIPPED: no nats-server binary to start a throwaway server");
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A nats-server child process, killed on drop.
struct Server {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let p =
            std::env::temp_dir().join(format!("longshore-nats-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(config: Option<&str>, js: bool) -> Option<Server> {
    let bin = nats_server()?;
    let port = free_port();
    let dir = TempDir::new();
    let mut cmd = Command::new(bin);
    cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
    if let Some(text) = config {
        let file = dir.0.join("server.conf");
        let text = text.replace("STORE_DIR", &dir.0.join("js").display().to_string());
        std::fs::write(&file, text).expect("config");
        cmd.arg("-c").arg(file);
    }
    if js {
        cmd.arg("-js").arg("-sd").arg(dir.0.join("js"));
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nats-server");
    let server = Server {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "throwaway nats-server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(server)
}

fn config(url: &str) -> NatsConfig {
    let mut c = NatsConfig::from_url(url).expect("url");
    c.connect_timeout = Duration::from_secs(2);
    c.request_timeout = Duration::from_secs(2);
    c.publish_timeout = Duration::from_secs(4);
    c
}

#[tokio::test]
async fn unreachable_server_is_a_connection_error_in_bounded_time() {
    let port = free_port(); // nothing listens there
    let started = Instant::now();
    let r = NatsBroker::connect(config(&format!("nats://user:s3cret@127.0.0.1:{port}"))).await;
    let e = r.expect_err("nothing listens");
    assert!(matches!(e, Error::Connection { .. }), "{e:?}");
    assert!(e.is_retryable());
    assert!(!e.to_string().contains("s3cret"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn bad_credentials_are_unauthorized() {
    let Some(server) = start(
        Some("authorization { user: app, password: right }\n"),
        false,
    ) else {
        return;
    };
    let started = Instant::now();
    let url = format!("nats://app:wrong@127.0.0.1:{}", server.port);
    let e = NatsBroker::connect(config(&url))
        .await
        .expect_err("wrong password");
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
    assert!(!e.is_retryable());
    assert!(!e.to_string().contains("wrong"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn jetstream_disabled_is_a_typed_error() {
    let Some(server) = start(None, false) else {
        return;
    };
    let started = Instant::now();
    let e = NatsBroker::connect(config(&format!("nats://127.0.0.1:{}", server.port)))
        .await
        .expect_err("no JetStream");
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    assert!(e.to_string().contains("JetStream"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn missing_stream_permission_is_unauthorized() {
    // May use JetStream (account info, stream info) but not create streams.
    let conf = r#"
jetstream { store_dir: "STORE_DIR" }
authorization {
  users = [
    { user: app, password: pw, permissions: {
        publish: { allow: ["$JS.API.INFO", "$JS.API.STREAM.INFO.>", "lstest.>"] }
        subscribe: { allow: ["_INBOX.>"] }
    } }
  ]
}
"#;
    let Some(server) = start(Some(conf), false) else {
        return;
    };
    let url = format!("nats://app:pw@127.0.0.1:{}", server.port);
    let mut c = config(&url);
    c.stream = "PERMS".into();
    c.subject_prefix = "lstest".into();
    let broker = NatsBroker::connect(c)
        .await
        .expect("connect with JetStream access");
    let started = Instant::now();
    let e = broker
        .publisher()
        .publish("orders.created", Message::new(&b"x"[..]))
        .await
        .expect_err("may not create the stream");
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
    assert!(e.to_string().to_lowercase().contains("permission"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}
