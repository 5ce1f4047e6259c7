//! `swarmfs gateway`: the swarm over HTTP (files, links, the dashboard, metrics).

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use swarmfs_client::PutOptions;
use swarmfs_http::{Gateway, GatewayOptions, Watcher};
use swarmfs_net::task::Runner;
use tokio::net::TcpListener;

use crate::nodes::{parse_replicas, parse_size, shutdown_on_signal};
use crate::{Cli, UsageError};

#[derive(Args)]
pub struct GatewayArgs {
    /// Address to serve HTTP on (port 0 picks a free port). Anything but a loopback address
    /// needs --token.
    #[arg(long, env = "SWARMFS_GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Asked of every request but /link/ ones: `Authorization: Bearer TOKEN` or `?token=TOKEN`.
    #[arg(long, env = "SWARMFS_GATEWAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Refuse PUT and DELETE (a read-only member's home refuses them anyway).
    #[arg(long, env = "SWARMFS_READ_ONLY")]
    pub read_only: bool,
    /// Decrypted chunks kept in memory for readers, shared by every request.
    #[arg(long, env = "SWARMFS_CACHE", default_value = "64M", value_parser = parse_size)]
    pub cache: u64,
    /// Copies of each chunk a PUT stores, on distinct peers.
    #[arg(long, env = "SWARMFS_REPLICAS", default_value_t = PutOptions::DEFAULT_REPLICAS, value_parser = parse_replicas)]
    pub replicas: usize,
    /// Connections served at once; more are answered 503 (idle ones close after 10 s).
    #[arg(long, env = "SWARMFS_MAX_CONNECTIONS", default_value_t = 256)]
    pub max_connections: usize,
}

pub async fn run(cli: &Cli, a: &GatewayArgs) -> Result<()> {
    let listener = TcpListener::bind(&a.listen).await.with_context(|| format!("cannot listen on {}", a.listen))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() && a.token.as_deref().unwrap_or_default().is_empty() {
        return Err(UsageError(format!(
            "a gateway on {addr} (not loopback) needs --token: anyone who can reach it could read the swarm \
             (e.g. --token $(head -c 16 /dev/urandom | xxd -p))"
        ))
        .into());
    }
    let client = Arc::new(crate::files::connect(cli).await?);
    let put = PutOptions { replicas: a.replicas, ..PutOptions::default() };
    let gw = Gateway::new(
        client,
        GatewayOptions {
            token: a.token.clone().filter(|t| !t.is_empty()),
            read_only: a.read_only,
            cache_bytes: a.cache as usize,
            put,
            max_connections: a.max_connections,
        },
    );
    let url = format!("http://{addr}/");
    if cli.json {
        outln!("{}", json!({ "url": url, "listen": addr.to_string(), "dashboard": format!("{url}dashboard") }));
    } else {
        outln!("gateway at {url}: files under {url}files/, the dashboard at {url}dashboard, metrics at {url}metrics");
    }
    let shutdown = shutdown_on_signal();
    let mut workers = Runner::new(shutdown.clone());
    workers.spawn(Watcher::new(gw.clone()));
    swarmfs_http::serve(listener, gw, shutdown).await;
    workers.shutdown().await;
    Ok(())
}
