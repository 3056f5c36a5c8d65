//! Server reflection on the broker's socket, as grpcurl and IDE clients use
//! it: both protocol versions (`grpc.reflection.v1` and the older
//! `v1alpha`) list the broker API and the health service, and can describe
//! the health service's file.

mod common;

use common::broker::TestBroker;

/// Asks one reflection protocol version for the list of services and for
/// the file that declares `grpc.health.v1.Health`; returns the service
/// names and the name of that file.
macro_rules! ask_reflection {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut client = ServerReflectionClient::new($channel);
        let requests = [
            MessageRequest::ListServices(String::new()),
            MessageRequest::FileContainingSymbol("grpc.health.v1.Health".into()),
        ]
        .map(|message| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(message),
        });
        let mut answers = client
            .server_reflection_info(tokio_stream::iter(requests))
            .await
            .expect("reflection call")
            .into_inner();
        let mut services = Vec::new();
        let mut files = Vec::new();
        while let Some(answer) = answers.message().await.expect("reflection answer") {
            match answer.message_response {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    services.extend(list.service.into_iter().map(|s| s.name))
                }
                Some(MessageResponse::FileDescriptorResponse(found)) => {
                    files.push(found.file_descriptor_proto.len())
                }
                other => panic!("unexpected reflection answer: {other:?}"),
            }
            if !services.is_empty() && !files.is_empty() {
                break;
            }
        }
        services.sort();
        (services, files)
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_broker_and_health_in_v1_and_v1alpha() {
    let broker = TestBroker::start(&[]).await;
    let channel = switchyard::api::client::channel(&broker.socket())
        .await
        .unwrap();
    let (v1, v1_files) = ask_reflection!(v1, channel.clone());
    let (v1alpha, v1alpha_files) = ask_reflection!(v1alpha, channel);
    for services in [&v1, &v1alpha] {
        for expected in [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "switchyard.v1.Broker",
        ] {
            assert!(
                services.iter().any(|s| s == expected),
                "{expected} missing from {services:?}"
            );
        }
    }
    assert_eq!(v1_files, vec![1], "the health file, described once");
    assert_eq!(v1alpha_files, vec![1]);
}
