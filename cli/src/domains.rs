//! `stackpad domains add|list|verify|remove`: a web service's custom domains.

use std::io::Write;

use clap::Subcommand;
use serde_json::{Value, json};

use super::{ApiClient, CliError, out};

#[derive(Debug, Subcommand)]
pub enum Domains {
    /// Add a custom domain; prints the DNS record to create.
    Add {
        #[arg(long)]
        service: String,
        domain: String,
    },
    /// The service's custom domains with their status.
    List {
        #[arg(long)]
        service: String,
    },
    /// Check the domain's DNS record now (exit 1 when it does not match yet).
    Verify {
        #[arg(long)]
        service: String,
        domain: String,
    },
    /// Remove a custom domain (routing and certificate go with it).
    Remove {
        #[arg(long)]
        service: String,
        domain: String,
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

fn line(d: &Value) -> String {
    let mut text = format!(
        "{}  {:<8}",
        d["domain"].as_str().unwrap_or(""),
        d["status"].as_str().unwrap_or("")
    );
    if let Some(error) = d["last_error"].as_str() {
        text.push_str("  ");
        text.push_str(error);
    }
    text
}

pub async fn run(api: &ApiClient, cmd: Domains, w: &mut impl Write) -> Result<i32, CliError> {
    match cmd {
        Domains::Add { service, domain } => {
            let d = api
                .post(
                    &format!("/services/{service}/domains"),
                    &json!({ "domain": domain }),
                )
                .await?;
            out(
                w,
                format!("added {} (pending)", d["domain"].as_str().unwrap_or("")),
            );
            let records = d["records"].as_array().cloned().unwrap_or_default();
            out(
                w,
                "create this DNS record, then run `stackpad domains verify`:",
            );
            if let Some(first) = records.first() {
                out(w, format!("  {}", record(first)));
            }
            if records.len() > 1 {
                out(w, "or, for an apex domain, these:");
                for r in &records[1..] {
                    out(w, format!("  {}", record(r)));
                }
            }
        }
        Domains::List { service } => {
            let list: Value = api.get(&format!("/services/{service}/domains")).await?;
            for d in list["items"].as_array().into_iter().flatten() {
                out(w, line(d));
            }
        }
        Domains::Verify { service, domain } => {
            let path = format!("/services/{service}/domains/{domain}/verify");
            match api.post(&path, &json!({})).await {
                Ok(d) => out(w, line(&d)),
                Err(CliError::Api {
                    status: 422,
                    message,
                }) => {
                    out(w, format!("not verified: {message}"));
                    return Ok(1);
                }
                Err(e) => return Err(e),
            }
        }
        Domains::Remove { service, domain } => {
            api.delete(&format!("/services/{service}/domains/{domain}"))
                .await?;
            out(w, format!("removed {domain}"));
        }
    }
    Ok(0)
}
