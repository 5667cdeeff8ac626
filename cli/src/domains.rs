//! `stackpad domains add|list|verify|remove`: a web service's custom domains.

use std::io::Write;

use clap::Subcommand;
use serde_json::{Value, json};

use super::commands::{Context, confirm_to};
use super::output::Printer;
use super::resolve::ServiceArgs;
use super::{CliError, exit};

#[derive(Debug, Subcommand)]
pub enum Domains {
    /// Add a custom domain; prints the DNS record to create.
    #[command(after_help = "Example:\n  stackpad domains add --service shop/web www.shop.example")]
    Add {
        #[command(flatten)]
        target: ServiceArgs,
        /// The domain, e.g. `www.shop.example`.
        domain: String,
    },
    /// The service's custom domains with their status.
    #[command(after_help = "Example:\n  stackpad domains list --service shop/web --json")]
    List {
        #[command(flatten)]
        target: ServiceArgs,
    },
    /// Check the domain's DNS record now (exit 1 when it does not match yet).
    #[command(
        after_help = "Example:\n  stackpad domains verify --service shop/web www.shop.example"
    )]
    Verify {
        #[command(flatten)]
        target: ServiceArgs,
        /// The domain, e.g. `www.shop.example`.
        domain: String,
    },
    /// Remove a custom domain (routing and certificate go with it). Asks to type the domain
    /// unless --yes.
    #[command(
        after_help = "Examples:\n  stackpad domains remove --service shop/web www.shop.example\n  \
                      stackpad domains remove www.shop.example --yes"
    )]
    Remove {
        #[command(flatten)]
        target: ServiceArgs,
        /// The domain, e.g. `www.shop.example`.
        domain: String,
        /// Do not ask (for scripts; without a terminal --yes is required).
        #[arg(long)]
        yes: bool,
    },
}

fn record(r: &Value) -> String {
    format!(
        "{}  {}  {}",
        r["name"].as_str().unwrap_or(""),
        r["type"].as_str().unwrap_or(""),
        r["value"].as_str().unwrap_or("")
    )
}

/// One domain for people: name, status, the last verification error.
pub fn line(d: &Value) -> String {
    let mut text = format!(
        "{}  {:<8}",
        d["domain"].as_str().unwrap_or(""),
        d["status"].as_str().unwrap_or("")
    );
    if let Some(error) = d["last_error"].as_str() {
        text.push_str("  ");
        text.push_str(error);
    }
    text.trim_end().to_owned()
}

pub async fn run(
    ctx: &Context<'_>,
    cmd: Domains,
    p: &mut Printer<'_, impl Write>,
) -> Result<i32, CliError> {
    match cmd {
        Domains::Add { target, domain } => {
            let s = ctx.names.service(&target).await?;
            let d = ctx
                .api
                .post(
                    &format!("/services/{}/domains", s.service.id),
                    &json!({ "domain": domain }),
                )
                .await?;
            p.line(format!(
                "added {} (pending)",
                d["domain"].as_str().unwrap_or("")
            ));
            let records = d["records"].as_array().cloned().unwrap_or_default();
            p.line("create this DNS record, then run `stackpad domains verify`:");
            if let Some(first) = records.first() {
                p.line(format!("  {}", record(first)));
            }
            if records.len() > 1 {
                p.line("or, for an apex domain, these:");
                for r in &records[1..] {
                    p.line(format!("  {}", record(r)));
                }
            }
            p.object(&d);
        }
        Domains::List { target } => {
            let s = ctx.names.service(&target).await?;
            let list: Value = ctx
                .api
                .get(&format!("/services/{}/domains", s.service.id))
                .await?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            for d in &items {
                p.line(line(d));
            }
            p.object(&json!(items));
        }
        Domains::Verify { target, domain } => {
            let s = ctx.names.service(&target).await?;
            let path = format!("/services/{}/domains/{domain}/verify", s.service.id);
            match ctx.api.post(&path, &json!({})).await {
                Ok(d) => {
                    p.line(line(&d));
                    p.object(&d);
                }
                Err(CliError::Api {
                    status: 422,
                    message,
                }) => {
                    p.line(format!("not verified: {message}"));
                    p.object(&json!({ "domain": domain, "verified": false, "message": message }));
                    return Ok(exit::OTHER);
                }
                Err(e) => return Err(e),
            }
        }
        Domains::Remove {
            target,
            domain,
            yes,
        } => {
            let s = ctx.names.service(&target).await?;
            confirm_to(
                ctx,
                yes,
                "remove",
                &format!("domain {domain} of {}", s.path()),
                &domain,
            )?;
            ctx.api
                .delete(&format!("/services/{}/domains/{domain}", s.service.id))
                .await?;
            p.line(format!("removed {domain}"));
            p.object(&json!({ "removed": domain }));
        }
    }
    Ok(exit::OK)
}
