//! `FILE_DESCRIPTOR_SET`: every generated service module embeds the encoded descriptors of
//! its file and of every file that file imports, dependencies first.

use drpc_codegen_tests::demo::echo::v1::{echo_drpc, keywords_drpc};
use prost::Message as _;
use prost_types::FileDescriptorSet;

fn names(set: &[u8]) -> Vec<String> {
    FileDescriptorSet::decode(set)
        .unwrap()
        .file
        .iter()
        .map(|f| f.name().to_owned())
        .collect()
}

#[test]
fn the_set_holds_the_file_and_its_imports_dependencies_first() {
    let names = names(echo_drpc::FILE_DESCRIPTOR_SET);
    assert_eq!(
        names.last().map(String::as_str),
        Some("demo/echo/v1/echo.proto")
    );
    for dep in [
        "google/protobuf/empty.proto",
        "google/protobuf/timestamp.proto",
        "demo/common/v1/common.proto",
        "money/money.proto",
    ] {
        assert!(
            names.iter().any(|n| n == dep),
            "{dep} missing from {names:?}"
        );
    }
    // Each file once.
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "{names:?}");
}

#[test]
fn services_of_one_file_share_the_set_and_it_describes_them() {
    assert_eq!(
        echo_drpc::FILE_DESCRIPTOR_SET,
        keywords_drpc::FILE_DESCRIPTOR_SET
    );
    let set = FileDescriptorSet::decode(echo_drpc::FILE_DESCRIPTOR_SET).unwrap();
    let file = set.file.last().unwrap();
    let services: Vec<&str> = file.service.iter().map(|s| s.name()).collect();
    assert_eq!(services, ["Echo", "Keywords"]);
}

#[test]
fn a_file_without_a_package_has_its_set_too() {
    let names = names(drpc_codegen_tests::bare::bare_drpc::FILE_DESCRIPTOR_SET);
    assert_eq!(names, ["bare.proto"]);
}
