//! tonic 0.14 gRPC, the baseline users would otherwise pick: generated client and server,
//! default HTTP/2 settings, every caller on one connection (HTTP/2 multiplexing).

use std::net::SocketAddr;

use anyhow::{Result, ensure};
use bytes::Bytes;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use crate::harness::{Client, Target};
use crate::pb::echo_client::EchoClient;
use crate::pb::echo_server::{Echo, EchoServer};
use crate::pb::{Payload, Summary};

/// The tonic target.
#[derive(Debug)]
pub(crate) struct Tonic;

#[derive(Debug)]
struct Service;

#[tonic::async_trait]
impl Echo for Service {
    async fn unary(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    async fn upload(
        &self,
        request: Request<Streaming<Payload>>,
    ) -> Result<Response<Summary>, Status> {
        let mut stream = request.into_inner();
        let mut sum = Summary::default();
        while let Some(p) = stream.message().await? {
            sum.messages += 1;
            sum.bytes += p.data.len() as u64;
        }
        Ok(Response::new(sum))
    }
}

impl Target for Tonic {
    type Client = TonicClient;

    async fn serve(listener: TcpListener) -> Result<()> {
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        // One service, so no router (tonic's `router` feature would pull in axum): the
        // generated server matches the method paths itself.
        let server = tonic::transport::Server::builder();
        tokio::spawn(server.serve_with_incoming(EchoServer::new(Service), incoming));
        Ok(())
    }

    async fn connect(addr: SocketAddr, count: usize) -> Result<Vec<TonicClient>> {
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await?;
        Ok((0..count)
            .map(|_| TonicClient {
                client: EchoClient::new(channel.clone()),
            })
            .collect())
    }
}

/// A handle on the one shared HTTP/2 connection.
#[derive(Debug)]
pub(crate) struct TonicClient {
    client: EchoClient<Channel>,
}

impl Client for TonicClient {
    async fn call(&mut self, payload: &Bytes) -> Result<()> {
        let reply = self
            .client
            .unary(Payload {
                data: payload.clone(),
            })
            .await?
            .into_inner();
        ensure!(
            reply.data.len() == payload.len(),
            "echo came back as {} bytes",
            reply.data.len()
        );
        Ok(())
    }

    async fn upload(&mut self, chunks: &[Bytes], count: u64) -> Result<u64> {
        let chunks = chunks.to_vec();
        let requests = futures_util::stream::iter((0..count as usize).map(move |i| Payload {
            data: chunks[i % chunks.len()].clone(),
        }));
        let sum = self.client.upload(requests).await?.into_inner();
        ensure!(
            sum.messages == count,
            "server counted {} messages, sent {count}",
            sum.messages
        );
        Ok(sum.bytes)
    }
}
