//! `stackpad tokens create|list|revoke` and `stackpad members list|add|remove`: who may use
//! the organization. Tokens are named by name or id (`GET /tokens` lists them, never with a
//! secret); members by email or id.

use std::io::Write;

use clap::Subcommand;
use serde_json::{Value, json};

use super::commands::{Context, confirm_to, str_of};
use super::output::{Printer, table};
use super::resolve::pick;
use super::{CliError, exit};

#[derive(Debug, Subcommand)]
pub enum Tokens {
    /// The organization's tokens (not revoked): name, role, created, expiry, last use; never
    /// a secret.
    #[command(after_help = "Examples:\n  stackpad tokens list\n  stackpad tokens list --json")]
    List,
    /// Mint a token; prints its secret, which is not shown again.
    #[command(
        after_help = "Examples:\n  stackpad tokens create --name ci --role deployer --expires-at 2027-01-01T00:00:00Z\n  \
                      stackpad tokens create --name grafana --role read_only --json | jq -r .secret"
    )]
    Create {
        /// What the token is for, e.g. `--name ci`.
        #[arg(long)]
        name: String,
        /// owner, deployer or read_only (default: this token's role; never more), e.g.
        /// `--role deployer`.
        #[arg(long)]
        role: Option<String>,
        /// RFC 3339 time after which the token stops working (at most 366 days ahead), e.g.
        /// `--expires-at 2027-01-01T00:00:00Z`.
        #[arg(long, visible_alias = "expires")]
        expires_at: Option<String>,
    },
    /// Revoke a token by name or id: it stops working at once. Asks to type its name unless
    /// --yes.
    #[command(after_help = "Examples:\n  stackpad tokens revoke ci\n  \
                      stackpad tokens revoke 4ef546c0-1b2c-4d5e-8f90-a1b2c3d4e5f6 --yes")]
    Revoke {
        /// The token's name or id (`stackpad tokens list` shows them), e.g. `ci`.
        token: String,
        /// Do not ask (for scripts; without a terminal --yes is required).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum Members {
    /// The organization's members and their roles.
    #[command(after_help = "Examples:\n  stackpad members list\n  stackpad members list --json")]
    List,
    /// Add a member with a role.
    #[command(after_help = "Example:\n  stackpad members add ada@shop.example --role developer")]
    Add {
        /// Their email address, e.g. `ada@shop.example`.
        email: String,
        /// owner, admin, developer or viewer, e.g. `--role developer`.
        #[arg(long)]
        role: String,
    },
    /// Remove a member by email or id. Asks to type the email unless --yes.
    #[command(
        after_help = "Examples:\n  stackpad members remove ada@shop.example\n  \
                      stackpad members remove ada@shop.example --yes"
    )]
    Remove {
        /// Their email address or id, e.g. `ada@shop.example`.
        member: String,
        /// Do not ask (for scripts; without a terminal --yes is required).
        #[arg(long)]
        yes: bool,
    },
}

/// The human table of tokens: id, name, role, created, expiry, last use.
pub fn tokens_table(items: &[Value]) -> Vec<String> {
    let rows = items
        .iter()
        .map(|t| {
            let expires = match (t["expires_at"].as_str(), t["expired"].as_bool()) {
                (None, _) => "never expires".to_owned(),
                (Some(at), Some(true)) => format!("expired {at}"),
                (Some(at), _) => format!("expires {at}"),
            };
            vec![
                str_of(t, "id").to_owned(),
                str_of(t, "name").to_owned(),
                str_of(t, "role").to_owned(),
                format!("created {}", str_of(t, "created_at")),
                expires,
                match t["last_used_at"].as_str() {
                    Some(at) => format!("used {at}"),
                    None => "never used".to_owned(),
                },
            ]
        })
        .collect::<Vec<_>>();
    table(&rows)
}

/// The human table of members: id, email, role, added.
pub fn members_table(items: &[Value]) -> Vec<String> {
    let rows = items
        .iter()
        .map(|m| {
            vec![
                str_of(m, "id").to_owned(),
                str_of(m, "email").to_owned(),
                str_of(m, "role").to_owned(),
                format!("added {}", str_of(m, "created_at")),
            ]
        })
        .collect::<Vec<_>>();
    table(&rows)
}

async fn items(ctx: &Context<'_>, path: &str) -> Result<Vec<Value>, CliError> {
    let v: Value = ctx.api.get(path).await?;
    Ok(v["items"].as_array().cloned().unwrap_or_default())
}

pub async fn tokens(
    ctx: &Context<'_>,
    cmd: Tokens,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    match cmd {
        Tokens::List => {
            let items = items(ctx, "/tokens").await?;
            if items.is_empty() {
                p.line("no tokens");
            }
            for l in tokens_table(&items) {
                p.line(l);
            }
            p.object(&json!(items));
        }
        Tokens::Create {
            name,
            role,
            expires_at,
        } => {
            let mut body = json!({ "name": name });
            if let Some(r) = role {
                body["role"] = json!(r);
            }
            if let Some(t) = expires_at {
                body["expires_at"] = json!(t);
            }
            let v = ctx.api.post("/tokens", &body).await?;
            p.line(format!(
                "token {} ({}, role {}, expires {}): {}",
                name,
                str_of(&v["token"], "id"),
                str_of(&v["token"], "role"),
                v["token"]["expires_at"].as_str().unwrap_or("never"),
                str_of(&v, "secret")
            ));
            p.object(&v);
        }
        Tokens::Revoke { token, yes } => {
            let all = items(ctx, "/tokens").await?;
            let t = pick("token", &token, &all)?;
            confirm_to(
                ctx,
                yes,
                "revoke",
                &format!("token {} ({})", t.name, t.id),
                &t.name,
            )?;
            ctx.api.delete(&format!("/tokens/{}", t.id)).await?;
            p.line(format!("token {} ({}) revoked", t.name, t.id));
            p.object(&json!({ "revoked": t }));
        }
    }
    Ok(exit::OK)
}

pub async fn members(
    ctx: &Context<'_>,
    cmd: Members,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    match cmd {
        Members::List => {
            let items = items(ctx, "/members").await?;
            if items.is_empty() {
                p.line("no members");
            }
            for l in members_table(&items) {
                p.line(l);
            }
            p.object(&json!(items));
        }
        Members::Add { email, role } => {
            let m = ctx
                .api
                .post("/members", &json!({ "email": email, "role": role }))
                .await?;
            p.line(format!(
                "added {} as {} ({})",
                str_of(&m, "email"),
                str_of(&m, "role"),
                str_of(&m, "id")
            ));
            p.object(&m);
        }
        Members::Remove { member, yes } => {
            // Members are named by email: the list is read as `name`s for the common lookup.
            let all: Vec<Value> = items(ctx, "/members")
                .await?
                .into_iter()
                .map(|m| json!({ "id": m["id"], "name": m["email"] }))
                .collect();
            let m = pick("member", &member, &all)?;
            confirm_to(ctx, yes, "remove", &format!("member {}", m.name), &m.name)?;
            ctx.api.delete(&format!("/members/{}", m.id)).await?;
            p.line(format!("removed member {} ({})", m.name, m.id));
            p.object(&json!({ "removed": { "id": m.id, "email": m.name } }));
        }
    }
    Ok(exit::OK)
}
