//! `swarmfs link`: links, read capabilities for one file each, and fetching with one on a
//! machine that holds no token (`swarmfs get LINK OUT`).

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use swarmfs_client::Client;
use swarmfs_core::Link;
use swarmfs_net::Swarm;
use swarmfs_proto::{LinkId, LinkInfo, RemotePath};

use crate::files::connect;
use crate::Cli;

#[derive(Args)]
pub struct LinkArgs {
    /// The file to link to (the version it is now: a later put makes a new version, which
    /// this link does not open).
    #[arg(required_unless_present_any = ["revoke", "list"], conflicts_with_all = ["revoke", "list"])]
    pub path: Option<String>,
    /// Revoke a link (the link itself, or its id or a unique prefix of it, as `--list`
    /// shows): the tracker refuses it from now on and closes its connections.
    #[arg(long, env = "SWARMFS_REVOKE", conflicts_with = "list")]
    pub revoke: Option<String>,
    /// List the swarm's links: id, file, who made it, revoked or not.
    #[arg(long)]
    pub list: bool,
}

pub async fn run(cli: &Cli, a: &LinkArgs) -> Result<()> {
    let client = connect(cli).await?;
    if a.list {
        return list(cli, &client.links().await?);
    }
    if let Some(which) = &a.revoke {
        let id = resolve(&client, which).await?;
        client.revoke_link(id).await.with_context(|| format!("revoke link {}", id.short()))?;
        if cli.json {
            outln!("{}", json!({ "revoked": id.to_string() }));
        } else {
            errln!("link {} revoked: its holders are refused from now on", id.short());
        }
        return Ok(());
    }
    let path = RemotePath::parse(a.path.as_deref().expect("clap requires a path"))?;
    let (link, info) = client.make_link(&path).await.with_context(|| format!("link {path}"))?;
    if cli.json {
        outln!("{}", json!({ "link": link.encode(), "id": info.id.to_string(), "path": info.path }));
    } else {
        outln!("{}", link.encode());
        errln!(
            "anyone with this link can read {path} (this version) with `swarmfs get LINK OUT`, no token needed; \
             revoke it with `swarmfs link --revoke {}`",
            info.id.short()
        );
    }
    Ok(())
}

/// A link given as the link itself, its id, or a unique prefix of the id.
async fn resolve(client: &Client, which: &str) -> Result<LinkId> {
    if Link::looks_like(which) {
        return Ok(Link::decode(which)?.id);
    }
    let which = which.to_ascii_lowercase();
    let found: Vec<LinkId> =
        client.links().await?.into_iter().map(|l| l.id).filter(|id| id.to_string().starts_with(&which)).collect();
    match found.as_slice() {
        [id] => Ok(*id),
        [] => Err(crate::NotFound(format!("no link {which} in this swarm")).into()),
        _ => {
            Err(crate::UsageError(format!("{which} is the start of {} link ids: give more of it", found.len())).into())
        }
    }
}

fn list(cli: &Cli, links: &[LinkInfo]) -> Result<()> {
    if cli.json {
        let v: Vec<_> = links
            .iter()
            .map(|l| {
                json!({ "id": l.id.to_string(), "path": l.path, "file_id": l.file_id.to_string(),
                        "created_by": l.created_by, "created_ms": l.created_ms, "revoked": l.revoked })
            })
            .collect();
        outln!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    outln!("{:<8}  {:<8}  {:<12}  PATH (when made)", "LINK", "STATE", "MADE BY");
    for l in links {
        let state = if l.revoked { "revoked" } else { "active" };
        outln!("{:<8}  {:<8}  {:<12}  {}", l.id.short(), state, l.created_by, l.path);
    }
    Ok(())
}

/// [`Client::connect_link`], with the tracker's address in the error.
pub async fn connect_link(link: &Link) -> Result<(Client, Arc<Swarm>)> {
    if link.tracker_addr.is_empty() {
        bail!("the link names no tracker address");
    }
    Client::connect_link(link).await.with_context(|| format!("cannot reach the tracker at {}", link.tracker_addr))
}
