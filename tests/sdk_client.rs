//! A real SDK client gets credentials from the daemon the way applications
//! do: aws-config's ECS container-credentials provider, pointed at the TCP
//! endpoint by `AWS_CONTAINER_CREDENTIALS_FULL_URI` and the token file.
//!
//! The provider reads only process environment variables, so this binary
//! holds this one test and sets them before any other thread reads them.

mod common;

use aws_credential_types::provider::ProvideCredentials;
use common::*;

#[tokio::test]
async fn the_rust_sdk_ecs_provider_gets_credentials_that_sts_accepts() {
    let setup = Setup::new(&[role("duper")], None).await;
    let daemon = Daemon::start(&setup.config_path);
    let uri = format!("http://{}/v1/credentials", daemon.tcp);
    // SAFETY: this binary runs this single test; nothing else reads the
    // environment concurrently.
    unsafe {
        std::env::remove_var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
        std::env::remove_var("AWS_CONTAINER_AUTHORIZATION_TOKEN");
        std::env::set_var("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri);
        std::env::set_var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &setup.token_file);
    }

    let provider = aws_config::ecs::EcsCredentialsProvider::builder().build();
    let credentials = provider
        .provide_credentials()
        .await
        .expect("the ECS provider accepts the answer");
    assert!(credentials.access_key_id().starts_with("ASIA"));
    assert!(credentials.session_token().is_some());
    assert!(credentials.expiry().is_some());

    let config = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("us-east-1"))
        .endpoint_url(setup.standin.endpoint())
        .credentials_provider(provider)
        .build();
    let identity = aws_sdk_sts::Client::from_conf(config)
        .get_caller_identity()
        .send()
        .await
        .expect("the stand-in accepts the vended session");
    assert_eq!(
        identity.arn(),
        Some(format!("arn:aws:sts::{ACCOUNT}:assumed-role/duperRole/test-host").as_str())
    );
    assert_eq!(identity.account(), Some(ACCOUNT));
}
