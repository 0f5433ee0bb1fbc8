//! The [`ServiceGenerator`] that turns one protobuf service into Rust source: the wire names,
//! the client, the server trait and its registration function.

use std::collections::HashMap;
use std::fmt::Write as _;

use heck::{ToShoutySnakeCase, ToSnakeCase};
use prost_build::{Comments, Method, Service, ServiceGenerator};

/// Go's protoc-gen-go-drpc answers an unimplemented method with
/// `drpcerr.WithCode(errors.New("Unimplemented"), drpcerr.Unimplemented)`: this text, code 12.
const UNIMPLEMENTED: &str =
    "::drpc_core::Error::remote(::drpc_core::error::UNIMPLEMENTED, \"Unimplemented\")";

/// Client methods that are not RPCs; an RPC whose snake-case name is one of these gets the
/// suffix `_rpc` in the client.
const CLIENT_RESERVED: &[&str] = &[
    "new",
    "with_options",
    "with_timeout",
    "set_options",
    "set_timeout",
    "options",
    "call_options",
    "inner",
    "into_inner",
];

/// Generates drpc code for every service prost-build hands over.
#[derive(Debug, Clone)]
pub(crate) struct DrpcGenerator {
    pub(crate) client: bool,
    pub(crate) server: bool,
    /// Server trait methods without default bodies (`Builder::require_all_methods`).
    pub(crate) require_all: bool,
    /// Per service full name, the encoded `FileDescriptorSet` of its file and every file that
    /// file imports (dependencies first).
    pub(crate) descriptors: HashMap<String, Vec<u8>>,
}

impl ServiceGenerator for DrpcGenerator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        let full_name = full_name(&service);
        let descriptor = self.descriptors.get(&full_name).map(Vec::as_slice);
        let server = self.server.then_some(Server {
            require_all: self.require_all,
        });
        generate_service(&service, self.client, server, descriptor, buf);
    }
}

/// `package.Service`, or `Service` for a file without a package.
fn full_name(service: &Service) -> String {
    if service.package.is_empty() {
        service.proto_name.clone()
    } else {
        format!("{}.{}", service.package, service.proto_name)
    }
}

/// Writes `FILE_DESCRIPTOR_SET`: the encoded set as a byte string literal.
fn write_descriptor_const(buf: &mut String, full_name: &str, set: &[u8]) {
    let _ = writeln!(
        buf,
        "/// The encoded `google.protobuf.FileDescriptorSet` of the file defining `{full_name}` and\n\
         /// of every file it imports (dependencies first): what a reflection service publishes\n\
         /// and what JSON transcoding reads."
    );
    buf.push_str("pub const FILE_DESCRIPTOR_SET: &[u8] = b\"");
    for &b in set {
        match b {
            b'"' => buf.push_str("\\\""),
            b'\\' => buf.push_str("\\\\"),
            0x20..=0x7e => buf.push(b as char),
            _ => {
                let _ = write!(buf, "\\x{b:02x}");
            }
        }
    }
    buf.push_str("\";\n");
}

/// The four kinds of RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unary,
    ServerStreaming,
    ClientStreaming,
    Bidi,
}

/// Everything the templates need about one method.
struct Rpc<'a> {
    method: &'a Method,
    kind: Kind,
    /// The wire name, `/package.Service/Method`.
    wire: String,
    /// The name of its constant in the `rpc` module.
    konst: String,
    /// The trait method's identifier (raw when a keyword, as prost-build makes it).
    ident: &'a str,
    /// The client methods' identifiers: plain, and with explicit options.
    client_ident: String,
    client_with: String,
    /// The request and reply types as seen from inside the generated module.
    req: String,
    resp: String,
}

impl<'a> Rpc<'a> {
    fn new(full_name: &str, method: &'a Method) -> Rpc<'a> {
        let kind = match (method.client_streaming, method.server_streaming) {
            (false, false) => Kind::Unary,
            (false, true) => Kind::ServerStreaming,
            (true, false) => Kind::ClientStreaming,
            (true, true) => Kind::Bidi,
        };
        let snake = method.proto_name.to_snake_case();
        let (client_ident, stem) = if CLIENT_RESERVED.contains(&snake.as_str()) {
            (format!("{snake}_rpc"), format!("{snake}_rpc"))
        } else {
            let stem = method.name.trim_start_matches("r#").to_owned();
            (method.name.clone(), stem)
        };
        let client_with = format!("{stem}_with");
        Rpc {
            method,
            kind,
            wire: format!("/{full_name}/{}", method.proto_name),
            konst: method.proto_name.to_shouty_snake_case(),
            ident: &method.name,
            client_ident,
            client_with,
            req: qualify(&method.input_type),
            resp: qualify(&method.output_type),
        }
    }
}

/// Makes a type path that prost-build resolved relative to the package's module usable from
/// the generated submodule one level down. Absolute paths (extern paths, `::prost_types`) and
/// the built-in types of the wrapper messages (`()`, `bool`, ...) stay as they are.
fn qualify(ty: &str) -> String {
    const BUILTIN: &[&str] = &["()", "bool", "i32", "i64", "u32", "u64", "f32", "f64"];
    if ty.starts_with("::") || ty.starts_with("crate::") || BUILTIN.contains(&ty) {
        ty.to_owned()
    } else {
        format!("super::{ty}")
    }
}

/// Clippy expects `new`, `from_*` and `into_*` methods to take no `self` or `self` by value,
/// but an RPC's name is not ours to choose: such methods get an `allow`.
fn allow_self_convention(ident: &str) -> &'static str {
    if ident == "new" || ident.starts_with("from_") || ident.starts_with("into_") {
        "#[allow(clippy::wrong_self_convention)]\n"
    } else {
        ""
    }
}

/// Writes doc comments: the proto comments when there are any, else `fallback`; then `extra`
/// as a paragraph of its own.
fn docs(buf: &mut String, comments: &Comments, fallback: &str, extra: &[&str]) {
    let has_comments = !comments.leading.is_empty() || !comments.trailing.is_empty();
    if has_comments {
        // Detached comments belong to nothing; leading and trailing ones are the item's docs.
        let own = Comments {
            leading_detached: Vec::new(),
            leading: comments.leading.clone(),
            trailing: comments.trailing.clone(),
        };
        own.append_with_indent(0, buf);
    } else {
        for line in fallback.lines() {
            let _ = writeln!(buf, "/// {line}");
        }
    }
    for line in extra {
        buf.push_str("///\n");
        let _ = writeln!(buf, "/// {line}");
    }
}

/// How to generate the server side.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Server {
    /// No default bodies: every method must be implemented.
    pub(crate) require_all: bool,
}

/// Generates the `<service>_drpc` module for one service.
pub(crate) fn generate_service(
    service: &Service,
    client: bool,
    server: Option<Server>,
    descriptor: Option<&[u8]>,
    buf: &mut String,
) {
    let full_name = full_name(service);
    let rpcs: Vec<Rpc<'_>> = service
        .methods
        .iter()
        .map(|m| Rpc::new(&full_name, m))
        .collect();
    let module = format!("{}_drpc", service.proto_name.to_snake_case());
    let trait_name = service.name.trim_start_matches("r#").to_owned();
    let client_name = format!("{trait_name}Client");

    buf.push('\n');
    let _ = writeln!(
        buf,
        "/// drpc client and server for the `{full_name}` service (generated by drpc-codegen)."
    );
    let _ = writeln!(buf, "pub mod {module} {{");

    let _ = writeln!(
        buf,
        "/// The service's full protobuf name.\npub const SERVICE_NAME: &str = \"{full_name}\";\n"
    );
    buf.push_str("/// The RPC names on the wire, one per method, as storj/drpc's generated code sends them.\npub mod rpc {\n");
    for rpc in &rpcs {
        let _ = writeln!(
            buf,
            "/// `{wire}`\npub const {konst}: &str = \"{wire}\";",
            wire = rpc.wire,
            konst = rpc.konst
        );
    }
    buf.push_str("}\n");

    if client {
        generate_client(buf, service, &full_name, &client_name, &trait_name, &rpcs);
    }
    if let Some(server) = server {
        generate_server(buf, service, &full_name, &trait_name, &rpcs, server);
    }
    if let Some(set) = descriptor {
        write_descriptor_const(buf, &full_name, set);
    }
    buf.push_str("}\n");
}

fn generate_client(
    buf: &mut String,
    service: &Service,
    full_name: &str,
    client_name: &str,
    trait_name: &str,
    rpcs: &[Rpc<'_>],
) {
    docs(
        buf,
        &service.comments,
        &format!("A client of the `{full_name}` service."),
        &[
            "One method per RPC, on any `drpc_core::Conn` (a single connection, a pool, a mux \
                 or an `Arc<dyn DynConn>`). Each method uses the client's default call options \
                 (see `with_options` and `with_timeout`); its `_with` twin takes them per call.",
            "On a plain connection (`drpc_core::TransportConn`, what `drpc_core::dial` \
                 returns) one RPC runs at a time, as in storj/drpc: while a stream is open on it \
                 (a server-streaming watch, say), other calls on that connection wait for it and \
                 fail at their deadline with `drpc_core::Error::Busy` (\"busy with another \
                 stream\"). For concurrent calls use a pool (`drpc-pool`) or a mux connection \
                 (`drpc-mux`).",
            &format!("The server side is the [`{trait_name}`] trait."),
        ],
    );
    let _ = write!(
        buf,
        r#"#[derive(Clone)]
pub struct {client_name}<C> {{
    conn: C,
    options: ::drpc_core::CallOptions,
}}

impl<C> ::core::fmt::Debug for {client_name}<C> {{
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {{
        f.debug_struct("{client_name}")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }}
}}

impl<C> {client_name}<C> {{
    /// A client on `conn`, with no default metadata and no timeout.
    pub fn new(conn: C) -> Self {{
        {client_name} {{
            conn,
            options: ::drpc_core::CallOptions::new(),
        }}
    }}

    /// This client with `options` as the default for its calls: metadata and a timeout (which
    /// counts from each call's start). To keep the original too,
    /// clone it first (`client.clone().with_options(..)`, for a `Clone` connection such as an
    /// `Arc`).
    pub fn with_options(mut self, options: ::drpc_core::CallOptions) -> Self {{
        self.options = options;
        self
    }}

    /// This client with every call timing out `timeout` after it starts.
    pub fn with_timeout(mut self, timeout: ::core::time::Duration) -> Self {{
        self.options.set_timeout(::core::option::Option::Some(timeout));
        self
    }}

    /// Sets the default call options (see `with_options`).
    pub fn set_options(&mut self, options: ::drpc_core::CallOptions) {{
        self.options = options;
    }}

    /// Sets or clears the timeout of each call (see `with_timeout`).
    pub fn set_timeout(&mut self, timeout: ::core::option::Option<::core::time::Duration>) {{
        self.options.set_timeout(timeout);
    }}

    /// The default call options.
    pub fn options(&self) -> &::drpc_core::CallOptions {{
        &self.options
    }}

    /// The options each call gets (a copy of the default options; a timeout in them counts
    /// from the call's start).
    pub fn call_options(&self) -> ::drpc_core::CallOptions {{
        self.options.clone()
    }}

    /// The connection.
    pub fn inner(&self) -> &C {{
        &self.conn
    }}

    /// The connection, giving up the client.
    pub fn into_inner(self) -> C {{
        self.conn
    }}
}}

impl<C: ::drpc_core::Conn> {client_name}<C> {{
"#
    );
    for rpc in rpcs {
        generate_client_method(buf, rpc);
    }
    buf.push_str("}\n");
}

fn generate_client_method(buf: &mut String, rpc: &Rpc<'_>) {
    const RESULT: &str = "::core::result::Result";
    const ERROR: &str = "::drpc_core::Error";
    const OPTIONS: &str = "::drpc_core::CallOptions";
    const STREAM: &str = "<C as ::drpc_core::Conn>::Stream";
    let Rpc {
        konst,
        client_ident: ident,
        client_with: with,
        req,
        resp,
        wire,
        ..
    } = rpc;
    let proto = &rpc.method.proto_name;
    let (fallback, returns) = match rpc.kind {
        Kind::Unary => (
            format!("Calls `{proto}`: one request, one reply."),
            resp.clone(),
        ),
        Kind::ServerStreaming => (
            format!(
                "Calls `{proto}`: sends the request and returns the replies (`recv` them, or \
                 `into_stream` for a `futures` stream)."
            ),
            format!("::drpc_core::ServerStreaming<{STREAM}, {resp}>"),
        ),
        Kind::ClientStreaming => (
            format!("Calls `{proto}`: `send` the requests, then `close_and_recv` the one reply."),
            format!("::drpc_core::ClientStreaming<{STREAM}, {req}, {resp}>"),
        ),
        Kind::Bidi => (
            format!("Calls `{proto}`: `send` requests and `recv` replies in any order."),
            format!("::drpc_core::BidiStreaming<{STREAM}, {req}, {resp}>"),
        ),
    };
    docs(
        buf,
        &rpc.method.comments,
        &fallback,
        &[&format!(
            "RPC `{wire}`, with the client's default call options."
        )],
    );
    let allow = allow_self_convention(ident);
    let allow_with = allow_self_convention(with);
    let (params, args, call) = match rpc.kind {
        Kind::Unary => (
            format!(", request: &{req}"),
            "request, ",
            format!("::drpc_core::ConnExt::call(&self.conn, rpc::{konst}, request, options)"),
        ),
        Kind::ServerStreaming => (
            format!(", request: &{req}"),
            "request, ",
            format!(
                "::drpc_core::ConnExt::server_streaming(&self.conn, rpc::{konst}, request, options)"
            ),
        ),
        Kind::ClientStreaming => (
            String::new(),
            "",
            format!("::drpc_core::ConnExt::client_streaming(&self.conn, rpc::{konst}, options)"),
        ),
        Kind::Bidi => (
            String::new(),
            "",
            format!("::drpc_core::ConnExt::bidi(&self.conn, rpc::{konst}, options)"),
        ),
    };
    let _ = write!(
        buf,
        r#"{allow}pub async fn {ident}(&self{params}) -> {RESULT}<{returns}, {ERROR}> {{
    self.{with}({args}self.call_options()).await
}}

/// `{proto}` (RPC `{wire}`) with explicit call options instead of the client's defaults.
{allow_with}pub async fn {with}(&self{params}, options: {OPTIONS}) -> {RESULT}<{returns}, {ERROR}> {{
    {call}.await
}}

"#
    );
}

fn generate_server(
    buf: &mut String,
    service: &Service,
    full_name: &str,
    trait_name: &str,
    rpcs: &[Rpc<'_>],
    options: Server,
) {
    const CTX: &str = "::drpc_core::Context";
    const ERROR: &str = "::drpc_core::Error";
    let about = if options.require_all {
        "One method per RPC, each without a default body: a service that leaves one out does \
         not compile. Implement them (plain `async fn` works) and add the service to a router \
         with [`register`]."
    } else {
        "One method per RPC. Each has a default body that answers like Go's generated \
         `Unimplemented` server: error code 12, text `Unimplemented`. Implement the methods \
         you serve (plain `async fn` works) and add the service to a router with \
         [`register`]."
    };
    docs(
        buf,
        &service.comments,
        &format!("The server side of the `{full_name}` service."),
        &[about],
    );
    let _ = writeln!(
        buf,
        "pub trait {trait_name}: ::core::marker::Send + ::core::marker::Sync + 'static {{"
    );
    for rpc in rpcs {
        let Rpc {
            ident,
            req,
            resp,
            wire,
            ..
        } = rpc;
        let proto = &rpc.method.proto_name;
        let stream = format!("::drpc_core::TypedStream<{req}, {resp}>");
        let (fallback, params, output, unused) = match rpc.kind {
            Kind::Unary => (
                format!("Serves `{proto}`: one request, one reply."),
                format!("request: {req}"),
                resp.clone(),
                "request",
            ),
            Kind::ServerStreaming => (
                format!("Serves `{proto}`: `send` the replies on `stream`, then return."),
                format!("request: {req}, stream: ::drpc_core::SendStream<{resp}>"),
                "()".to_owned(),
                "request, stream",
            ),
            Kind::ClientStreaming => (
                format!(
                    "Serves `{proto}`: `recv` the requests from `stream` until `None`, then \
                     return the one reply."
                ),
                format!("stream: &mut {stream}"),
                resp.clone(),
                "stream",
            ),
            Kind::Bidi => (
                format!("Serves `{proto}`: `recv` requests and `send` replies on `stream`."),
                format!("stream: {stream}"),
                "()".to_owned(),
                "stream",
            ),
        };
        docs(
            buf,
            &rpc.method.comments,
            &fallback,
            &[&format!("RPC `{wire}`.")],
        );
        let allow = allow_self_convention(ident);
        let signature = format!(
            "{allow}fn {ident}(&self, ctx: {CTX}, {params})\n    -> impl \
             ::core::future::Future<Output = ::core::result::Result<{output}, {ERROR}>> + \
             ::core::marker::Send"
        );
        if options.require_all {
            let _ = write!(buf, "{signature};\n\n");
        } else {
            let _ = write!(
                buf,
                r#"{signature} {{
    let _ = (ctx, {unused});
    ::core::future::ready(::core::result::Result::Err({UNIMPLEMENTED}))
}}

"#
            );
        }
    }
    buf.push_str("}\n\n");

    let service_param = if rpcs.is_empty() {
        "_service"
    } else {
        "service"
    };
    let _ = write!(
        buf,
        r#"/// Adds every method of the `{full_name}` service, served by `service`, to `router`.
pub fn register<S: {trait_name}>(router: ::drpc_core::Router, service: S) -> ::drpc_core::Router {{
    register_arc(router, ::std::sync::Arc::new(service))
}}

/// [`register`] for a service that is already shared.
pub fn register_arc<S: {trait_name}>(
    router: ::drpc_core::Router,
    {service_param}: ::std::sync::Arc<S>,
) -> ::drpc_core::Router {{
    router
"#
    );
    for rpc in rpcs {
        let Rpc {
            ident,
            konst,
            req,
            resp,
            ..
        } = rpc;
        let stream = format!("::drpc_core::TypedStream<{req}, {resp}>");
        let (method, params, body) = match rpc.kind {
            Kind::Unary => (
                "unary",
                format!("request: {req}"),
                format!("<S as {trait_name}>::{ident}(&service, ctx, request).await"),
            ),
            Kind::ServerStreaming => (
                "streaming",
                format!("mut stream: {stream}"),
                format!(
                    "let request = stream.recv().await?.ok_or({ERROR}::Eof)?;
                    <S as {trait_name}>::{ident}(&service, ctx, request, stream.into_send()).await"
                ),
            ),
            Kind::ClientStreaming => (
                "streaming",
                format!("mut stream: {stream}"),
                format!(
                    "let reply = <S as {trait_name}>::{ident}(&service, ctx, &mut stream).await?;
                    stream.send(&reply).await"
                ),
            ),
            Kind::Bidi => (
                "streaming",
                format!("stream: {stream}"),
                format!("<S as {trait_name}>::{ident}(&service, ctx, stream).await"),
            ),
        };
        let _ = write!(
            buf,
            r#"    .{method}(rpc::{konst}, {{
        let service = ::std::sync::Arc::clone(&service);
        move |ctx: {CTX}, {params}| {{
            let service = ::std::sync::Arc::clone(&service);
            async move {{
                {body}
            }}
        }}
    }})
"#
        );
    }
    buf.push_str("}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualify_keeps_absolute_and_builtin_paths() {
        assert_eq!(qualify("Msg"), "super::Msg");
        assert_eq!(qualify("super::common::Msg"), "super::super::common::Msg");
        assert_eq!(qualify("outer::Inner"), "super::outer::Inner");
        assert_eq!(
            qualify("::prost_types::Timestamp"),
            "::prost_types::Timestamp"
        );
        assert_eq!(qualify("crate::types::Money"), "crate::types::Money");
        assert_eq!(qualify("()"), "()");
        assert_eq!(qualify("bool"), "bool");
    }
}
