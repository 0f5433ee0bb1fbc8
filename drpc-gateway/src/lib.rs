//! An HTTP/JSON gateway for drpc services: `curl` and browsers call the same handlers a drpc
//! [`Server`] serves, following the [Connect protocol]'s unary rules.
//!
//! | Request | Answer |
//! |---|---|
//! | `POST /pkg.Service/Method`, `content-type: application/json` (proto3 JSON) | `200`, the reply as proto3 JSON (64-bit integers as strings) |
//! | the same with `application/proto` (the encoded message) | `200`, the encoded reply |
//! | a server-streaming method, JSON | `200`, `application/x-ndjson`: one reply per line; an error after the first reply ends the body with a line `{"error":{"code":"…","message":"…"}}` |
//! | a failed call | the HTTP status of the code (Connect's table), `application/json` body `{"code":"not_found","message":"…"}`, and the drpc code itself in the `drpc-error-code` header |
//! | JSON that does not fit the request type | `400`, code `invalid_argument`, the message names the field |
//! | an unknown method | `404`, code `unimplemented` |
//! | a client- or bidi-streaming method | `501`, code `unimplemented` |
//! | another method than POST | `405`; another content type: `415` |
//!
//! drpc codes 1 to 16 are read as gRPC's codes (`canceled` … `unauthenticated`), as Go's
//! `drpcerr` users commonly do; any other code is `unknown` (HTTP 500). A
//! `connect-timeout-ms` header sets the call's timeout. Request headers are not forwarded as
//! metadata, except `drpc-metadata-K: V`, which becomes metadata `K=V`.
//!
//! The gateway reaches the handlers either in process ([`Gateway::in_process`]: each request
//! runs on a fresh in-memory connection served by the [`Server`], so layers such as auth and
//! metrics apply) or through any client connection ([`Gateway::proxy`]).
//!
//! ```no_run
//! # async fn run(server: drpc_core::Server, set: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
//! let mut pool = prost_reflect::DescriptorPool::new();
//! pool.decode_file_descriptor_set(set)?; // a generated FILE_DESCRIPTOR_SET
//! let gateway = drpc_gateway::Gateway::in_process(server, pool);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! gateway.serve(listener).await?;
//! # Ok(()) }
//! ```
//!
//! [Connect protocol]: https://connectrpc.com/docs/protocol

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use drpc_core::conn::BoxStream;
use drpc_core::{CallOptions, DynConn, Error, RawStream, Server, TransportConn};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor};

/// The response body type: a full body or a stream of lines.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The largest request body read (4 MiB, drpc's default message limit).
const MAX_BODY: usize = 4 << 20;

/// Where the gateway sends calls.
#[derive(Clone)]
enum Backend {
    /// A fresh in-memory connection per request, served by this server.
    InProcess(Server),
    /// This connection.
    Proxy(Arc<dyn DynConn>),
}

/// A static file the gateway serves on `GET`.
#[derive(Clone, Debug)]
struct Page {
    path: String,
    content_type: &'static str,
    body: Bytes,
}

/// The HTTP/JSON gateway. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    backend: Backend,
    pool: DescriptorPool,
    pages: Arc<Vec<Page>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("in_process", &matches!(self.backend, Backend::InProcess(_)))
            .field("services", &self.pool.services().len())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Serves the methods of the services in `pool` by calling `server`'s handler in process.
    pub fn in_process(server: Server, pool: DescriptorPool) -> Gateway {
        Gateway {
            backend: Backend::InProcess(server),
            pool,
            pages: Arc::new(Vec::new()),
        }
    }

    /// Serves the methods of the services in `pool` by calling them on `conn` (a drpc
    /// backend).
    pub fn proxy(conn: Arc<dyn DynConn>, pool: DescriptorPool) -> Gateway {
        Gateway {
            backend: Backend::Proxy(conn),
            pool,
            pages: Arc::new(Vec::new()),
        }
    }

    /// Also serves `body` with `content_type` on `GET path` (such as a web page at `/`).
    pub fn with_page(
        mut self,
        path: impl Into<String>,
        content_type: &'static str,
        body: impl Into<Bytes>,
    ) -> Gateway {
        Arc::make_mut(&mut self.pages).push(Page {
            path: path.into(),
            content_type,
            body: body.into(),
        });
        self
    }

    /// Accepts HTTP/1.1 connections on `listener` and serves each on a task of its own, until
    /// the future is dropped.
    ///
    /// # Errors
    /// Accept errors.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        loop {
            let (tcp, _) = listener.accept().await?;
            let gateway = self.clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(tcp);
                let service = hyper::service::service_fn(move |req| {
                    let gateway = gateway.clone();
                    async move { Ok::<_, Infallible>(gateway.handle(req).await) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!(error = %e, "gateway connection ended");
                }
            });
        }
    }

    /// Answers one HTTP request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        if (parts.method == Method::GET || parts.method == Method::HEAD)
            && let Some(page) = self.pages.iter().find(|p| p.path == parts.uri.path())
        {
            return Response::builder()
                .header(header::CONTENT_TYPE, page.content_type)
                .body(full(page.body.clone()))
                .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, ""));
        }
        let Some(method) = self.method(parts.uri.path()) else {
            return error_response(
                StatusCode::NOT_FOUND,
                "unimplemented",
                &format!("no method {}", parts.uri.path()),
                None,
            );
        };
        if parts.method != Method::POST {
            let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return r;
        }
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let json = match content_type.as_str() {
            "application/json" => true,
            "application/proto" => false,
            _ => {
                return plain(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "content-type must be application/json or application/proto\n",
                );
            }
        };
        if method.is_client_streaming() {
            return error_response(
                StatusCode::NOT_IMPLEMENTED,
                "unimplemented",
                "client and bidi streams are not served over HTTP",
                None,
            );
        }
        let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "invalid_argument",
                    &format!("reading the body: {e}"),
                    None,
                );
            }
        };
        let request = match decode_request(&method, &body, json) {
            Ok(r) => r,
            Err(message) => {
                return error_response(StatusCode::BAD_REQUEST, "invalid_argument", &message, None);
            }
        };
        let options = call_options(&parts.headers);
        let rpc = format!("/{}/{}", method.parent_service().full_name(), method.name());
        let conn = self.conn();
        if method.is_server_streaming() {
            if !json {
                return plain(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "server streams are served as JSON only\n",
                );
            }
            return server_stream(conn, rpc, request, options, method).await;
        }
        match conn.unary_dyn(&rpc, request, options).await {
            Ok(reply) => match encode_reply(&method, reply, json) {
                Ok(body) => Response::builder()
                    .header(
                        header::CONTENT_TYPE,
                        if json {
                            "application/json"
                        } else {
                            "application/proto"
                        },
                    )
                    .body(full(body))
                    .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "")),
                Err(message) => error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    &message,
                    None,
                ),
            },
            Err(e) => call_error(&e),
        }
    }

    /// The method a path names, `/pkg.Service/Method`.
    fn method(&self, path: &str) -> Option<MethodDescriptor> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        self.pool
            .get_service_by_name(service)?
            .methods()
            .find(|m| m.name() == method)
    }

    /// A connection for one request.
    fn conn(&self) -> Arc<dyn DynConn> {
        match &self.backend {
            Backend::Proxy(conn) => Arc::clone(conn),
            Backend::InProcess(server) => {
                let (client, served) = tokio::io::duplex(64 << 10);
                let server = server.clone();
                tokio::spawn(async move {
                    if let Err(e) = server.serve_one(served).await {
                        tracing::debug!(error = %e, "in-process gateway connection ended");
                    }
                });
                Arc::new(TransportConn::new(client))
            }
        }
    }
}

/// The request's bytes from its JSON or binary body.
fn decode_request(method: &MethodDescriptor, body: &[u8], json: bool) -> Result<Bytes, String> {
    if !json {
        // Checked, so that a body of another type fails here rather than in the handler.
        DynamicMessage::decode(method.input(), body)
            .map_err(|e| format!("{}: {e}", method.input().full_name()))?;
        return Ok(Bytes::copy_from_slice(body));
    }
    let text = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        body
    };
    let mut de = serde_json::Deserializer::from_slice(text);
    let message = DynamicMessage::deserialize(method.input(), &mut de)
        .and_then(|m| de.end().map(|()| m))
        .map_err(|e| format!("{}: {e}", method.input().full_name()))?;
    Ok(Bytes::from(message.encode_to_vec()))
}

/// The reply as JSON (one line, no newline) or as it came.
fn encode_reply(method: &MethodDescriptor, reply: Bytes, json: bool) -> Result<Bytes, String> {
    if !json {
        return Ok(reply);
    }
    let message = DynamicMessage::decode(method.output(), reply)
        .map_err(|e| format!("decoding the reply: {e}"))?;
    serde_json::to_vec(&message)
        .map(Bytes::from)
        .map_err(|e| format!("encoding the reply: {e}"))
}

/// The call's options from the request headers.
fn call_options(headers: &hyper::HeaderMap) -> CallOptions {
    let mut options = CallOptions::new();
    if let Some(ms) = headers
        .get("connect-timeout-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        options = options.with_timeout(Duration::from_millis(ms));
    }
    for (name, value) in headers {
        if let (Some(key), Ok(value)) =
            (name.as_str().strip_prefix("drpc-metadata-"), value.to_str())
        {
            options = options.with_metadata(key, value);
        }
    }
    options
}

/// A server stream as newline-delimited JSON.
async fn server_stream(
    conn: Arc<dyn DynConn>,
    rpc: String,
    request: Bytes,
    options: CallOptions,
    method: MethodDescriptor,
) -> Response<Body> {
    let mut stream = match open(&conn, &rpc, request, options).await {
        Ok(s) => s,
        Err(e) => return call_error(&e),
    };
    // The first reply decides between a stream and an error response.
    let first = match stream.recv().await {
        Ok(first) => first,
        Err(e) => return call_error(&e),
    };
    struct State {
        conn: Arc<dyn DynConn>,
        stream: Option<BoxStream>,
        next: Option<Bytes>,
        method: MethodDescriptor,
    }
    let state = State {
        conn,
        stream: Some(stream),
        next: first,
        method,
    };
    let lines = futures_util::stream::unfold(state, |mut st| async move {
        let _keep = &st.conn;
        let item = match st.next.take() {
            Some(m) => Ok(m),
            None => {
                let stream = st.stream.as_mut()?;
                match stream.recv().await {
                    Ok(Some(m)) => Ok(m),
                    Ok(None) => return None,
                    Err(e) => Err(e),
                }
            }
        };
        let line = match item {
            Ok(m) => match encode_reply(&st.method, m, true) {
                Ok(json) => {
                    let mut line = json.to_vec();
                    line.push(b'\n');
                    line
                }
                Err(message) => {
                    st.stream = None;
                    error_line("internal", &message)
                }
            },
            Err(e) => {
                st.stream = None;
                let (_, code) = connect_code(&e);
                error_line(code, &e.to_string())
            }
        };
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(line))), st))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(BodyExt::boxed_unsync(StreamBody::new(lines)))
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, ""))
}

async fn open(
    conn: &Arc<dyn DynConn>,
    rpc: &str,
    request: Bytes,
    options: CallOptions,
) -> Result<BoxStream, Error> {
    let mut stream = conn.open_stream_dyn(rpc, options).await?;
    stream.send(request).await?;
    stream.close_send().await?;
    Ok(stream)
}

fn error_line(code: &str, message: &str) -> Vec<u8> {
    let mut line = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    line.push('\n');
    line.into_bytes()
}

/// The HTTP status and the Connect code name for a call's error.
pub fn connect_code(e: &Error) -> (StatusCode, &'static str) {
    match e {
        Error::Remote { code, .. } => code_name(*code),
        Error::DeadlineExceeded | Error::Busy => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
        Error::Canceled => (status(499), "canceled"),
        Error::ResourceExhausted { .. } => (StatusCode::TOO_MANY_REQUESTS, "resource_exhausted"),
        Error::Closed | Error::Dial(_) | Error::Io(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

/// Connect's code name and HTTP status for a drpc code read as a gRPC code (anything outside
/// 1..=16 is `unknown`).
pub fn code_name(code: u64) -> (StatusCode, &'static str) {
    match code {
        1 => (status(499), "canceled"),
        3 => (StatusCode::BAD_REQUEST, "invalid_argument"),
        4 => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
        5 => (StatusCode::NOT_FOUND, "not_found"),
        6 => (StatusCode::CONFLICT, "already_exists"),
        7 => (StatusCode::FORBIDDEN, "permission_denied"),
        8 => (StatusCode::TOO_MANY_REQUESTS, "resource_exhausted"),
        9 => (StatusCode::BAD_REQUEST, "failed_precondition"),
        10 => (StatusCode::CONFLICT, "aborted"),
        11 => (StatusCode::BAD_REQUEST, "out_of_range"),
        12 => (StatusCode::NOT_IMPLEMENTED, "unimplemented"),
        13 => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        14 => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        15 => (StatusCode::INTERNAL_SERVER_ERROR, "data_loss"),
        16 => (StatusCode::UNAUTHORIZED, "unauthenticated"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "unknown"),
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn call_error(e: &Error) -> Response<Body> {
    let (status, code) = connect_code(e);
    let drpc_code = matches!(e, Error::Remote { .. }).then(|| e.code());
    error_response(status, code, &e.to_string(), drpc_code)
}

fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    drpc_code: Option<u64>,
) -> Response<Body> {
    let body = serde_json::json!({"code": code, "message": message}).to_string();
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(c) = drpc_code {
        builder = builder.header("drpc-error-code", c);
    }
    builder
        .body(full(Bytes::from(body)))
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, ""))
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(full(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn full(bytes: Bytes) -> Body {
    BodyExt::boxed_unsync(Full::new(bytes))
}
