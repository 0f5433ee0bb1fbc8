//! The reflection service over a live connection: listing, files by symbol and by name (with
//! their imports), the not-found answers, and [`drpc_reflection::fetch`].

use drpc_core::{Router, Server};
use drpc_reflection::proto::{
    FileByFilenameRequest, FileContainingSymbolRequest, ListServicesRequest,
};
use drpc_reflection::{FILE_DESCRIPTOR_SET, NOT_FOUND, Reflection, ReflectionClient};
use prost::Message as _;

/// A server publishing the reflection service's own descriptors (as if it were a service of
/// the application), and a client of it.
async fn client() -> ReflectionClient<drpc_core::TransportConn<tokio::net::TcpStream>> {
    let router = drpc_reflection::register(Router::new(), &[FILE_DESCRIPTOR_SET]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(router);
    tokio::spawn(async move { server.serve(listener).await });
    ReflectionClient::new(drpc_core::dial(addr).await.unwrap())
}

fn file_names(files: &[Vec<u8>]) -> Vec<String> {
    files
        .iter()
        .map(|f| {
            prost_types::FileDescriptorProto::decode(f.as_slice())
                .unwrap()
                .name()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn lists_services_and_answers_files_by_symbol_and_name() {
    let client = client().await;
    let list = client.list_services(&ListServicesRequest {}).await.unwrap();
    assert_eq!(list.services, ["drpc.reflection.v1.Reflection"]);
    for symbol in [
        "drpc.reflection.v1.Reflection",
        "drpc.reflection.v1.Reflection.ListServices",
        "drpc.reflection.v1.ListServicesResponse",
        "drpc.reflection.v1.ListServicesResponse.services",
        ".drpc.reflection.v1.FileByFilenameRequest",
    ] {
        let files = client
            .file_containing_symbol(&FileContainingSymbolRequest {
                symbol: symbol.into(),
            })
            .await
            .unwrap()
            .file_descriptor_proto;
        assert_eq!(
            file_names(&files),
            ["drpc/reflection/v1/reflection.proto"],
            "{symbol}"
        );
    }
    let files = client
        .file_by_filename(&FileByFilenameRequest {
            filename: "drpc/reflection/v1/reflection.proto".into(),
        })
        .await
        .unwrap()
        .file_descriptor_proto;
    assert_eq!(file_names(&files), ["drpc/reflection/v1/reflection.proto"]);
}

#[tokio::test]
async fn unknown_symbols_and_files_are_not_found() {
    let client = client().await;
    let e = client
        .file_containing_symbol(&FileContainingSymbolRequest {
            symbol: "nope.Nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), NOT_FOUND);
    assert_eq!(e.to_string(), "symbol not found: nope.Nope");
    let e = client
        .file_by_filename(&FileByFilenameRequest {
            filename: "nope.proto".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), NOT_FOUND);
}

#[tokio::test]
async fn fetch_builds_a_pool_of_every_published_service() {
    let client = client().await;
    let (pool, services) = drpc_reflection::fetch(&client).await.unwrap();
    assert_eq!(services, ["drpc.reflection.v1.Reflection"]);
    let service = pool
        .get_service_by_name("drpc.reflection.v1.Reflection")
        .unwrap();
    assert_eq!(service.methods().len(), 3);
}

#[test]
fn files_come_with_their_imports_and_bad_sets_are_refused() {
    // A set whose file imports another: the answer lists the file first, then its import.
    let set = prost_types::FileDescriptorSet {
        file: vec![
            prost_types::FileDescriptorProto {
                name: Some("a.proto".into()),
                package: Some("a".into()),
                message_type: vec![prost_types::DescriptorProto {
                    name: Some("A".into()),
                    ..Default::default()
                }],
                syntax: Some("proto3".into()),
                ..Default::default()
            },
            prost_types::FileDescriptorProto {
                name: Some("b.proto".into()),
                package: Some("b".into()),
                dependency: vec!["a.proto".into()],
                message_type: vec![prost_types::DescriptorProto {
                    name: Some("B".into()),
                    field: vec![prost_types::FieldDescriptorProto {
                        name: Some("a".into()),
                        number: Some(1),
                        label: Some(1),
                        r#type: Some(11),
                        type_name: Some(".a.A".into()),
                        json_name: Some("a".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                syntax: Some("proto3".into()),
                ..Default::default()
            },
        ],
    };
    let reflection = Reflection::new()
        .with_descriptors(&set.encode_to_vec())
        .unwrap()
        // Adding the same files again changes nothing.
        .with_descriptors(&set.encode_to_vec())
        .unwrap();
    assert_eq!(reflection.services().count(), 0);
    let files: Vec<Vec<u8>> = reflection
        .file_containing_symbol("b.B")
        .unwrap()
        .into_iter()
        .map(|b| b.to_vec())
        .collect();
    assert_eq!(file_names(&files), ["b.proto", "a.proto"]);
    assert!(reflection.file_containing_symbol("b.B.a").is_some());
    assert!(reflection.file_containing_symbol("b.B.zzz").is_none());
    assert!(Reflection::new().with_descriptors(b"\xff\xff").is_err());
}
