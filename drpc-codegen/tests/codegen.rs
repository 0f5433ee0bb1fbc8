//! The generator driven in-process, writing into a temporary directory: no `protoc` needed,
//! the options, and the error text of broken `.proto` files.

use std::fs;
use std::path::Path;
use std::process::Command;

const ECHO: &str = r#"syntax = "proto3";
package echo;
message Msg { string text = 1; int64 n = 2; }
service Echo {
  rpc Unary(Msg) returns (Msg) {}
  rpc ServerStream(Msg) returns (stream Msg) {}
  rpc ClientStream(stream Msg) returns (Msg) {}
  rpc Bidi(stream Msg) returns (stream Msg) {}
}
"#;

/// Writes `files` (name, text) into a fresh directory, compiles `protos` with `configure`'s
/// builder into an output directory, and returns the generated files by name.
fn generate(
    files: &[(&str, &str)],
    protos: &[&str],
    configure: impl FnOnce(drpc_codegen::Builder) -> drpc_codegen::Builder,
) -> Result<Vec<(String, String)>, drpc_codegen::Error> {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("proto");
    let out = dir.path().join("out");
    for (name, text) in files {
        let path = src.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    fs::create_dir_all(&out).unwrap();
    configure(drpc_codegen::configure().out_dir(&out)).compile(protos, &[&src])?;
    let mut generated: Vec<(String, String)> = fs::read_dir(&out)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            (name, fs::read_to_string(e.path()).unwrap())
        })
        .collect();
    generated.sort();
    Ok(generated)
}

fn only(files: Vec<(String, String)>, name: &str) -> String {
    files
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} was not generated"))
        .1
}

const CHILD_ENV: &str = "DRPC_CODEGEN_NO_PROTOC_CHILD";

/// Runs in a child process of this test binary whose `PROTOC` and `PATH` point at a `protoc`
/// that always fails (the environment cannot be changed safely in-process): generation must
/// still succeed, so no `protoc` is ever needed.
#[test]
fn generates_without_protoc() {
    if std::env::var_os(CHILD_ENV).is_some() {
        // The child: prove the fake is what `protoc` means here, then generate.
        let protoc = std::env::var_os("PROTOC").expect("PROTOC is set");
        let direct = Command::new(&protoc).arg("--version").status().unwrap();
        assert!(!direct.success(), "the fake protoc must fail");
        let on_path = Command::new("protoc").arg("--version").status().unwrap();
        assert!(!on_path.success(), "protoc on PATH must be the fake");

        let echo = only(
            generate(&[("echo.proto", ECHO)], &["echo.proto"], |b| b).unwrap(),
            "echo.rs",
        );
        assert!(echo.contains("pub struct Msg"));
        assert!(echo.contains("pub struct EchoClient<C>"));
        println!("child generated {} bytes without protoc", echo.len());
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("protoc");
    fs::write(
        &fake,
        "#!/bin/sh\necho 'fake protoc: must not be run' >&2\nexit 1\n",
    )
    .unwrap();
    make_executable(&fake);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "generates_without_protoc",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .env("PROTOC", &fake)
        .env("PATH", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("child generated") && stdout.contains("bytes without protoc"),
        "the child did not run the generation:\n{stdout}"
    );
    assert!(
        stderr.contains("fake protoc: must not be run"),
        "the fake was not tried: {stderr}"
    );
}

#[cfg(unix)]
fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) {}

#[test]
fn generates_every_kind_with_go_names() {
    let echo = only(
        generate(&[("echo.proto", ECHO)], &["echo.proto"], |b| b).unwrap(),
        "echo.rs",
    );
    for needle in [
        "pub mod echo_drpc",
        "pub const SERVICE_NAME: &str = \"echo.Echo\";",
        "pub const UNARY: &str = \"/echo.Echo/Unary\";",
        "pub const SERVER_STREAM: &str = \"/echo.Echo/ServerStream\";",
        "pub const CLIENT_STREAM: &str = \"/echo.Echo/ClientStream\";",
        "pub const BIDI: &str = \"/echo.Echo/Bidi\";",
        "pub struct EchoClient<C>",
        "pub async fn unary(",
        "pub async fn unary_with(",
        "::drpc_core::ServerStreaming<",
        "::drpc_core::ClientStreaming<",
        "::drpc_core::BidiStreaming<",
        "pub trait Echo: ::core::marker::Send + ::core::marker::Sync + 'static",
        "pub fn register<S: Echo>(",
        // Go's protoc-gen-go-drpc: errors.New("Unimplemented") with drpcerr.Unimplemented.
        "::drpc_core::error::UNIMPLEMENTED,\n",
        "\"Unimplemented\",",
    ] {
        assert!(echo.contains(needle), "missing {needle:?} in\n{echo}");
    }
}

#[test]
fn a_file_without_package_uses_the_bare_service_name() {
    let files = generate(
        &[(
            "bare.proto",
            "syntax = \"proto3\";\nmessage Ping {}\nservice Bare { rpc Ping(.Ping) returns (.Ping); }\n",
        )],
        &["bare.proto"],
        |b| b,
    )
    .unwrap();
    let bare = only(files, "_.rs");
    assert!(
        bare.contains("pub const SERVICE_NAME: &str = \"Bare\";"),
        "{bare}"
    );
    assert!(
        bare.contains("pub const PING: &str = \"/Bare/Ping\";"),
        "{bare}"
    );
}

#[test]
fn client_and_server_can_be_switched_off() {
    let server_only = only(
        generate(&[("echo.proto", ECHO)], &["echo.proto"], |b| {
            b.build_client(false)
        })
        .unwrap(),
        "echo.rs",
    );
    assert!(!server_only.contains("EchoClient"));
    assert!(server_only.contains("pub trait Echo"));
    assert!(server_only.contains("pub const UNARY"));

    let client_only = only(
        generate(&[("echo.proto", ECHO)], &["echo.proto"], |b| {
            b.build_server(false)
        })
        .unwrap(),
        "echo.rs",
    );
    assert!(client_only.contains("pub struct EchoClient<C>"));
    assert!(!client_only.contains("pub trait Echo"));
    assert!(!client_only.contains("pub fn register"));
}

#[test]
fn extern_paths_and_prost_config_reach_prost_build() {
    let files = generate(
        &[
            (
                "money/money.proto",
                "syntax = \"proto3\";\npackage money;\nmessage Amount { int64 cents = 1; }\n",
            ),
            (
                "shop.proto",
                "syntax = \"proto3\";\npackage shop;\nimport \"money/money.proto\";\n\
                 message Order { money.Amount total = 1; }\n\
                 service Shop { rpc Pay(money.Amount) returns (Order); }\n",
            ),
        ],
        &["shop.proto"],
        |b| {
            b.extern_path(".money", "::money_crate")
                .type_attribute(".shop.Order", "#[derive(Eq)]")
                .prost_config(|c| {
                    c.btree_map(["."]);
                })
                .include_file("all.rs")
        },
    )
    .unwrap();
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["all.rs", "shop.rs"],
        "money.rs must not be generated"
    );
    let shop = &files[1].1;
    // Messages of the other crate keep their absolute path, also inside the service module.
    assert!(
        shop.contains("::core::option::Option<::money_crate::Amount>"),
        "{shop}"
    );
    assert!(shop.contains("request: &::money_crate::Amount"), "{shop}");
    assert!(shop.contains("#[derive(Eq)]"), "{shop}");
    assert!(files[0].1.contains("pub mod shop"), "{}", files[0].1);
}

#[test]
fn a_syntax_error_reports_file_line_and_column() {
    let err = generate(
        &[(
            "broken.proto",
            "syntax = \"proto3\";\npackage broken;\nmessage Msg {\n  string text = ;\n}\n",
        )],
        &["broken.proto"],
        |b| b,
    )
    .unwrap_err();
    assert!(matches!(err, drpc_codegen::Error::Proto(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "broken.proto:4:17: expected an integer, but found ';'"
    );
    // Debug is the same text, for build scripts whose main returns the error.
    assert_eq!(format!("{err:?}"), err.to_string());
}

#[test]
fn an_unknown_type_reports_file_line_and_column() {
    let err = generate(
        &[(
            "svc.proto",
            "syntax = \"proto3\";\npackage svc;\nmessage Msg {}\nservice S {\n  rpc M(Nope) returns (Msg);\n}\n",
        )],
        &["svc.proto"],
        |b| b,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "svc.proto:5:9: name 'Nope' is not defined");
}

#[test]
fn a_missing_import_reports_file_line_and_column() {
    let err = generate(
        &[(
            "a.proto",
            "syntax = \"proto3\";\npackage a;\nimport \"missing/b.proto\";\n",
        )],
        &["a.proto"],
        |b| b,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "a.proto:3:1: import 'missing/b.proto' not found"
    );
}

#[test]
fn a_service_without_methods_still_generates_valid_code() {
    // prost-build parses the whole output with syn: invalid code would panic here.
    let files = generate(
        &[(
            "empty.proto",
            "syntax = \"proto3\";\npackage e;\nservice Nothing {}\nservice Other { rpc Get(Req) returns (Req); }\nmessage Req {}\n",
        )],
        &["empty.proto"],
        |b| b,
    )
    .unwrap();
    let e = only(files, "e.rs");
    assert!(e.contains("pub mod nothing_drpc"), "{e}");
    assert!(e.contains("pub struct NothingClient<C>"), "{e}");
    assert!(e.contains("_service: ::std::sync::Arc<S>"), "{e}");
    assert!(e.contains("pub mod other_drpc"), "{e}");
    assert!(e.contains("pub const GET: &str = \"/e.Other/Get\";"), "{e}");
}

#[test]
fn the_default_include_file_is_a_documented_module_tree() {
    let files = generate(
        &[
            (
                "a/v1/a.proto",
                "syntax = \"proto3\";\npackage a.v1;\nmessage Id { string v = 1; }\n",
            ),
            (
                "b/b.proto",
                "syntax = \"proto3\";\npackage b;\nimport \"a/v1/a.proto\";\n\
                 service Store { rpc Get(a.v1.Id) returns (a.v1.Id); }\n",
            ),
        ],
        &["b/b.proto"],
        |b| b,
    )
    .unwrap();
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [drpc_codegen::DEFAULT_INCLUDE_FILE, "a.v1.rs", "b.rs"]
    );
    let tree = &files[0].1;
    for needle in [
        "/// The `a` protobuf package",
        "pub mod a {",
        "/// The `a.v1` protobuf package",
        "pub mod v1 {",
        "/// The `b` protobuf package",
        "pub mod b {",
    ] {
        assert!(tree.contains(needle), "{needle:?} missing in\n{tree}");
    }
}

#[test]
fn require_all_methods_leaves_out_the_default_bodies() {
    let with_defaults = only(
        generate(&[("echo.proto", ECHO)], &["echo.proto"], |b| b).unwrap(),
        "echo.rs",
    );
    let strict = only(
        generate(&[("echo.proto", ECHO)], &["echo.proto"], |b| {
            b.require_all_methods(true)
        })
        .unwrap(),
        "echo.rs",
    );
    assert_eq!(with_defaults.matches("\"Unimplemented\"").count(), 4);
    assert_eq!(strict.matches("\"Unimplemented\"").count(), 0, "{strict}");
    assert!(strict.contains("::core::marker::Send;"), "{strict}");
}
