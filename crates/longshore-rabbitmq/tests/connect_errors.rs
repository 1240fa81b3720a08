//! Wrong credentials, an unreachable host and a missing vhost give typed errors in bounded
//! time, and no error message carries the password.

mod common;

use std::time::{Duration, Instant};

use longshore_core::{Broker, Error};
use longshore_rabbitmq::{RabbitBroker, RabbitConfig};

/// Each failing connect must return well within this.
const BOUND: Duration = Duration::from_secs(15);

async fn connect(url: &str, timeout: Duration) -> (Result<RabbitBroker, Error>, Duration) {
    let config = RabbitConfig::from_url(url)
        .expect("url")
        .with_connect_timeout(timeout);
    let start = Instant::now();
    let result = tokio::time::timeout(BOUND, RabbitBroker::connect(config))
        .await
        .expect("connect returned within the bound");
    (result, start.elapsed())
}

/// The reachable broker's URL with other credentials or another vhost.
fn variant(user: &str, password: &str, vhost: &str) -> Option<String> {
    let mut url = url::Url::parse(&common::amqp_url()).ok()?;
    url.set_username(user).ok()?;
    url.set_password(Some(password)).ok()?;
    url.set_path(vhost);
    Some(url.to_string())
}

#[tokio::test]
async fn wrong_password_is_unauthorized() {
    // Only meaningful when the broker is there.
    if common::broker_with(|c| c).await.is_none() {
        return;
    }
    let url = variant("guest", "definitely-wrong-pw", "/%2f").expect("url");
    let (result, took) = connect(&url, Duration::from_secs(10)).await;
    let e = result.expect_err("wrong password must fail");
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
    assert!(!e.is_retryable());
    assert!(!format!("{e} {e:?}").contains("definitely-wrong-pw"));
    println!("wrong password: {e} after {took:?}");
}

#[tokio::test]
async fn unknown_user_is_unauthorized() {
    if common::broker_with(|c| c).await.is_none() {
        return;
    }
    let url = variant("nobody-here", "pw-of-nobody", "/%2f").expect("url");
    let (result, _) = connect(&url, Duration::from_secs(10)).await;
    let e = result.expect_err("unknown user must fail");
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
    assert!(!format!("{e} {e:?}").contains("pw-of-nobody"));
}

#[tokio::test]
async fn missing_vhost_is_a_config_error() {
    if common::broker_with(|c| c).await.is_none() {
        return;
    }
    let url = variant("guest", "guest", "/no-such-vhost-longshore").expect("url");
    let (result, took) = connect(&url, Duration::from_secs(10)).await;
    let e = result.expect_err("missing vhost must fail");
    assert!(
        matches!(e, Error::Config(_) | Error::Unauthorized { .. }),
        "{e:?}"
    );
    assert!(!e.is_retryable());
    println!("missing vhost: {e} after {took:?}");
}

#[tokio::test]
async fn refused_port_is_a_connection_error() {
    // Bind a port, then free it: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("amqp://guest:s3cret-refused@127.0.0.1:{port}/%2f");
    let (result, took) = connect(&url, Duration::from_secs(5)).await;
    let e = result.expect_err("nothing listens");
    assert!(matches!(e, Error::Connection { .. }), "{e:?}");
    assert!(e.is_retryable());
    assert!(!format!("{e} {e:?}").contains("s3cret-refused"));
    assert!(took < Duration::from_secs(5), "refused fast: {took:?}");
}

#[tokio::test]
async fn silent_host_times_out() {
    // A TCP server on loopback that accepts and never speaks AMQP (like a black-holed host).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let url = format!("amqp://guest:s3cret-silent@127.0.0.1:{port}/%2f");
    let (result, took) = connect(&url, Duration::from_secs(2)).await;
    let e = result.expect_err("silent server");
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert!(e.is_retryable());
    assert!(!format!("{e} {e:?}").contains("s3cret-silent"));
    assert!(took < Duration::from_secs(5), "bounded: {took:?}");
    server.abort();
}

#[tokio::test]
async fn bad_url_is_a_config_error_without_the_password() {
    for url in [
        "amqp://u:s3cret-url@[::1/",
        "http://u:s3cret-url@localhost/",
    ] {
        let e = RabbitBroker::connect_url(url).await.expect_err("bad url");
        assert!(matches!(e, Error::Config(_)), "{e:?}");
        assert!(!format!("{e} {e:?}").contains("s3cret-url"));
    }
}
