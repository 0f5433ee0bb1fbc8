//! The message types: from `--proto` files (protox) or from the server's reflection service.

use std::path::PathBuf;

use drpc_core::{CallOptions, Error};
use drpc_reflection::proto::FileContainingSymbolRequest;
use drpc_reflection::{DescriptorPool, ReflectionClient};
use prost_reflect::MethodDescriptor;

use crate::args::{Schema, Target};
use crate::conn::{SharedConn, connect};
use crate::{Failure, usage};

/// The pool of the `--proto` files (with their imports).
fn compile(schema: &Schema) -> Result<DescriptorPool, Failure> {
    let includes: Vec<PathBuf> = if schema.includes.is_empty() {
        let mut dirs: Vec<PathBuf> = schema
            .protos
            .iter()
            .map(|p| match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            })
            .collect();
        dirs.dedup();
        dirs
    } else {
        schema.includes.clone()
    };
    let fds =
        protox::compile(&schema.protos, &includes).map_err(|e| usage(format!("--proto: {e:?}")))?;
    DescriptorPool::from_file_descriptor_set(fds).map_err(|e| usage(format!("--proto: {e}")))
}

/// Reads a reflection error: no reflection service, an unknown symbol, or a failed call.
fn reflection_error(e: Error, what: &str) -> Failure {
    match &e {
        Error::Remote { code, message }
            if *code == 0 && message.starts_with(drpc_core::error::UNKNOWN_RPC_PREFIX) =>
        {
            Failure::Other(anyhow::anyhow!(
                "the server has no reflection service ({message}); pass --proto FILE"
            ))
        }
        Error::Remote { code, .. } if *code == drpc_reflection::NOT_FOUND => {
            usage(format!("{what} not found on the server"))
        }
        _ => Failure::Call(e),
    }
}

/// The files defining `symbol`, asked of the server.
async fn symbol_pool(
    conn: &SharedConn,
    options: &CallOptions,
    symbol: &str,
) -> Result<DescriptorPool, Failure> {
    let client = ReflectionClient::new(conn.clone()).with_options(options.clone());
    let files = client
        .file_containing_symbol(&FileContainingSymbolRequest {
            symbol: symbol.to_owned(),
        })
        .await
        .map_err(|e| reflection_error(e, symbol))?
        .file_descriptor_proto;
    let mut pool = DescriptorPool::new();
    drpc_reflection::add_files(&mut pool, files)
        .map_err(|e| Failure::Other(anyhow::anyhow!("{e}")))?;
    Ok(pool)
}

/// The types for a call of a method of `service`.
pub(crate) async fn load(
    schema: &Schema,
    conn: &SharedConn,
    options: &CallOptions,
    service: Option<&str>,
) -> Result<DescriptorPool, Failure> {
    if !schema.protos.is_empty() {
        return compile(schema);
    }
    match service {
        Some(s) => symbol_pool(conn, options, s).await,
        None => Ok(DescriptorPool::new()),
    }
}

/// The method `service`/`method` in `pool`.
pub(crate) fn method(
    pool: &DescriptorPool,
    service: &str,
    method: &str,
) -> Result<MethodDescriptor, Failure> {
    let s = pool
        .get_service_by_name(service)
        .ok_or_else(|| usage(format!("unknown service {service}")))?;
    let found = s.methods().find(|m| m.name() == method);
    found.ok_or_else(|| {
        let known: Vec<String> = s.methods().map(|m| m.name().to_owned()).collect();
        usage(format!(
            "unknown method {method} of {service} (it has {})",
            known.join(", ")
        ))
    })
}

/// The services and the pool describing them.
pub(crate) async fn list(
    schema: &Schema,
    target: &Target,
) -> Result<(DescriptorPool, Vec<String>), Failure> {
    if !schema.protos.is_empty() {
        let pool = compile(schema)?;
        let mut names: Vec<String> = pool.services().map(|s| s.full_name().to_owned()).collect();
        names.sort();
        return Ok((pool, names));
    }
    let conn = connect(target).await?;
    let options = target.call_options()?;
    let client = ReflectionClient::new(conn).with_options(options);
    match drpc_reflection::fetch(&client).await {
        Ok(found) => Ok(found),
        Err(drpc_reflection::FetchError::Call(e)) => Err(reflection_error(e, "service")),
        Err(e) => Err(Failure::Other(anyhow::anyhow!("{e}"))),
    }
}

/// A pool holding `symbol`'s file.
pub(crate) async fn for_symbol(
    schema: &Schema,
    target: &Target,
    symbol: &str,
) -> Result<DescriptorPool, Failure> {
    if !schema.protos.is_empty() {
        return compile(schema);
    }
    let conn = connect(target).await?;
    let options = target.call_options()?;
    symbol_pool(&conn, &options, symbol).await
}
