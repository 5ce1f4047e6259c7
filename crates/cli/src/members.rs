//! `swarmfs member add|ls|revoke`: member management, run with the tracker's home (its
//! identity is the admin credential) against the running tracker.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use swarmfs_client::Client;
use swarmfs_core::Token;
use swarmfs_proto::{MemberKey, Request, Response};

use crate::home::Home;
use crate::Cli;

#[derive(Args)]
pub struct MemberArgs {
    #[command(subcommand)]
    pub command: MemberCommand,
}

#[derive(Subcommand)]
pub enum MemberCommand {
    /// Register a member and print its token (it carries the data key: hand it over safely).
    #[command(
        after_help = "Example:\n  swarmfs member add alice --home /srv/swarm-tracker --data-key-from ~/.swarmfs\n  swarmfs member add auditor --read-only --home /srv/swarm-tracker --data-key-from ~/.swarmfs"
    )]
    Add {
        /// 1-64 of A-Z a-z 0-9 . _ -; never reused, even after a revocation.
        name: String,
        /// Reads only: ls, stat, search, get, cat, and read-only mounts.
        #[arg(long, env = "SWARMFS_READ_ONLY")]
        read_only: bool,
        /// A member home of this swarm, to copy the data key from: the tracker never holds it.
        #[arg(long, env = "SWARMFS_DATA_KEY_FROM")]
        data_key_from: std::path::PathBuf,
    },
    /// List members and their rights.
    #[command(after_help = "Example:\n  swarmfs member ls --home /srv/swarm-tracker --json")]
    Ls,
    /// Refuse a member's credential from now on; its open connections close at once.
    #[command(after_help = "Example:\n  swarmfs member revoke alice --home /srv/swarm-tracker")]
    Revoke { name: String },
}

/// A client of the running tracker with the tracker's own identity: the admin.
pub async fn admin(cli: &Cli) -> Result<(Home, Client)> {
    let home = Home::load(&cli.home_dir())?;
    let swarm = home.swarm()?;
    if swarm.identity.node_id() != home.token.tracker_id {
        return Err(crate::Refused(format!(
            "{} is not the tracker's home: member management and drains need the home `swarmfs init` made",
            home.dir.display()
        ))
        .into());
    }
    let t = &home.token;
    let client = Client::connect(swarm, &t.tracker_addrs, t.tracker_id, None)
        .await
        .with_context(|| format!("cannot reach the tracker at {} (is it running?)", t.tracker_addrs.join(" or ")))?;
    Ok((home, client))
}

pub async fn run(cli: &Cli, a: &MemberArgs) -> Result<()> {
    match &a.command {
        MemberCommand::Add { name, read_only, data_key_from } => {
            let source = Home::load(data_key_from)?;
            let (home, client) = admin(cli).await?;
            if source.token.tracker_id != home.token.tracker_id || source.token.swarm_secret != home.token.swarm_secret
            {
                bail!("{} belongs to another swarm", source.dir.display());
            }
            let Some(data_key) = source.token.data_key.clone() else {
                bail!("{} holds a peer token: --data-key-from needs a member's home", source.dir.display());
            };
            let req = Request::MemberAdd { name: name.clone(), read_only: *read_only };
            let Response::MemberSecret(secret) = client.call(&req).await? else {
                bail!("unexpected reply from the tracker");
            };
            let token = Token {
                data_key: Some(data_key),
                member: Some(MemberKey { name: name.clone(), secret, read_only: *read_only }),
                ..home.token.to_peer()
            };
            if cli.json {
                outln!(
                    "{}",
                    serde_json::json!({ "name": name, "read_only": read_only, "member_token": token.encode() })
                );
            } else {
                outln!("{}", token.encode());
                errln!(
                    "member {name} added ({}). The token holds the data key: hand it over as safely as a password.",
                    if *read_only { "read-only" } else { "read-write" }
                );
            }
        }
        MemberCommand::Ls => {
            let (_, client) = admin(cli).await?;
            let Response::Members(mut members) = client.call(&Request::MemberList).await? else {
                bail!("unexpected reply from the tracker");
            };
            members.sort_by(|a, b| a.name.cmp(&b.name));
            if cli.json {
                outln!("{}", serde_json::to_string(&members)?);
            } else {
                outln!("{:<24} {:<11} {:<8}", "NAME", "RIGHTS", "STATE");
                for m in members {
                    let rights = if m.read_only { "read-only" } else { "read-write" };
                    outln!("{:<24} {:<11} {:<8}", m.name, rights, if m.revoked { "revoked" } else { "active" });
                }
            }
        }
        MemberCommand::Revoke { name } => {
            let (_, client) = admin(cli).await?;
            client.call(&Request::MemberRevoke { name: name.clone() }).await?;
            if !cli.json {
                errln!("member {name} revoked; its open connections were closed");
            }
        }
    }
    Ok(())
}
