//! The facade: backend selection by URL, typed errors, credentials never printed.

use longshore::{connect, connect_with, Config, ConnectError};

#[tokio::test]
async fn memory_is_the_default_and_has_every_handle() {
    let ls = connect_with(&Config::default()).await.expect("memory");
    assert_eq!(ls.backend, "memory");
    assert!(ls.store().is_ok());
    assert!(ls.outbox().is_ok());
    assert!(ls.inbox().is_ok());
    assert_eq!(ls.publisher.capabilities().backend, "memory");
}

#[tokio::test]
async fn unknown_scheme_is_typed_and_redacted() {
    let err = connect("mqtt://user:hunter2@localhost:1883")
        .await
        .expect_err("unknown");
    assert!(matches!(err, ConnectError::UnknownScheme { .. }), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    let err = connect("not a url").await.expect_err("no scheme");
    assert!(matches!(err, ConnectError::UnknownScheme { .. }));
}

#[cfg(not(feature = "rabbitmq"))]
#[tokio::test]
async fn scheme_without_its_feature_names_the_feature() {
    let err = connect("amqp://guest:secret@127.0.0.1:5672/%2f")
        .await
        .expect_err("disabled");
    match &err {
        ConnectError::FeatureDisabled { feature, .. } => assert_eq!(*feature, "rabbitmq"),
        other => panic!("expected FeatureDisabled, got {other:?}"),
    }
    assert!(err.to_string().contains("--features rabbitmq"));
    assert!(!err.to_string().contains("secret"));
}

#[cfg(not(feature = "kafka"))]
#[tokio::test]
async fn kafka_without_its_feature_names_the_feature() {
    let err = connect("kafka://127.0.0.1:9092")
        .await
        .expect_err("disabled");
    assert!(
        matches!(
            err,
            ConnectError::FeatureDisabled {
                feature: "kafka",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn config_debug_and_display_redact_credentials() {
    let config = Config::new("amqp://svc:p4ssw0rd@rabbit:5672/%2f")
        .with_store_url("postgres://app:s3cr3t@db/orders");
    let shown = format!("{config:?} {config}");
    assert!(
        !shown.contains("p4ssw0rd") && !shown.contains("s3cr3t"),
        "{shown}"
    );
    assert!(shown.contains("svc:***@rabbit"), "{shown}");
    // serde keeps the real URL: it is configuration, not output.
    let json = serde_json::to_string(&config).expect("json");
    let back: Config = serde_json::from_str(&json).expect("json");
    assert_eq!(back, config);
}

#[test]
fn config_from_env_defaults_to_memory() {
    // Only the default is asserted: other tests may run in the same process, so the
    // environment is not modified here.
    if std::env::var(longshore::ENV_URL).is_err() {
        assert_eq!(Config::from_env().url, "memory://");
    }
}
