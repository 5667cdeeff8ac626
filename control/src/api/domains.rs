//! Custom domains of a web service: add (answers the DNS record to create), list, verify now,
//! remove. Routing and certificates follow verification (`crate::domains`).

use ::api::ServiceKind;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, ApiResult, invalid};
use super::extract::{Body, Org, PathDomain, PathId};
use super::validate;
use crate::domains::Expectation;
use crate::domains::route::platform_hosts;
use crate::domains::verifier::VerifyError;
use crate::store::CustomDomain;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AddDomain {
    pub domain: String,
}

/// Lower case without the trailing dot; a name a user may claim: not a wildcard, not under the
/// platform's own domain (those hosts are the platform's to hand out).
pub fn parse_domain(raw: &str, apps_domain: &str) -> ApiResult<String> {
    let domain = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    if domain.starts_with("*.") {
        return Err(invalid(
            "domain",
            format!("{domain:?}: wildcards cannot be custom domains; add each name"),
        ));
    }
    validate::domain("domain", &domain)?;
    let apps = apps_domain.to_ascii_lowercase();
    if domain == apps || domain.ends_with(&format!(".{apps}")) {
        return Err(invalid(
            "domain",
            format!(
                "{domain} is under the platform domain {apps}; only the platform assigns those"
            ),
        ));
    }
    Ok(domain)
}

fn expectation(state: &AppState, d: &CustomDomain) -> Expectation {
    match &state.domains {
        Some(v) => v.expectation(&d.domain, &d.target),
        None => Expectation {
            domain: d.domain.clone(),
            cname_target: d.target.clone(),
            ingress_ips: vec![],
        },
    }
}

fn view(state: &AppState, d: &CustomDomain) -> Value {
    let mut v = json!(d);
    v["records"] = json!(expectation(state, d).records());
    v
}

pub async fn add(
    State(state): State<AppState>,
    org: Org,
    PathId(service_id): PathId,
    Body(req): Body<AddDomain>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let domain = parse_domain(&req.domain, &state.apps_domain)?;
    let service = state.store.service(org.id, service_id).await?;
    if service.kind != ServiceKind::Web {
        return Err(invalid(
            "domain",
            format!(
                "service {service_id} is a {} service; only web services take custom domains",
                service.kind
            ),
        ));
    }
    // The CNAME target: the service's primary platform host.
    let target = platform_hosts(&state.store, org.id, &service, &state.apps_domain)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| {
            ApiError::Internal(format!("web service {service_id} has no platform host"))
        })?;
    let added = state
        .store
        .add_domain(org.id, service_id, &domain, &target)
        .await?;
    Ok((StatusCode::CREATED, Json(view(&state, &added))))
}

pub async fn list(
    State(state): State<AppState>,
    org: Org,
    PathId(service_id): PathId,
) -> ApiResult<Json<Value>> {
    let domains = state.store.domains(org.id, service_id).await?;
    let items: Vec<Value> = domains.iter().map(|d| view(&state, d)).collect();
    Ok(Json(json!({ "items": items })))
}

/// Checks the domain now: 200 with the domain once its record matches, 422 naming the record
/// seen and the one expected when it does not, 503 when DNS or the proxy did not answer.
pub async fn verify(
    State(state): State<AppState>,
    org: Org,
    PathId(service_id): PathId,
    PathDomain(domain): PathDomain,
) -> ApiResult<Json<Value>> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let d = state.store.domain(org.id, service_id, &domain).await?;
    let verifier = state.domains.clone().ok_or_else(|| {
        ApiError::Unavailable("custom-domain verification is not configured".into())
    })?;
    match verifier.check(&d).await {
        Ok(checked) => match checked.mismatch {
            None => Ok(Json(view(&state, &checked.domain))),
            Some(message) => Err(invalid("domain", message)),
        },
        Err(VerifyError::Store(e)) => Err(e.into()),
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}

pub async fn remove(
    State(state): State<AppState>,
    org: Org,
    PathId(service_id): PathId,
    PathDomain(domain): PathDomain,
) -> ApiResult<StatusCode> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let removed = state
        .store
        .delete_domain(org.id, service_id, &domain)
        .await?;
    if let Some(verifier) = &state.domains
        && let Err(e) = verifier.removed(&removed).await
    {
        // The row is gone; the proxy keeps the old route until the service's next switch.
        tracing::warn!(domain, error = %e, "revoking a removed domain at the proxy failed");
        return Err(ApiError::Unavailable(format!(
            "{domain} was removed, but the proxy could not be updated yet: {e}"
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_normalized_and_refused_by_name() {
        let apps = "apps.example.net";
        assert_eq!(
            parse_domain(" Shop.Example.COM. ", apps).unwrap(),
            "shop.example.com"
        );
        let refused = |raw: &str| parse_domain(raw, apps).unwrap_err().to_string();
        assert!(
            refused("*.example.com").contains("wildcards"),
            "{}",
            refused("*.example.com")
        );
        assert!(refused("localhost").starts_with("domain:"));
        assert!(refused("bad_name.example.com").contains("not a lower-case domain name"));
        assert!(refused("web-p.apps.example.net").contains("under the platform domain"));
        assert!(refused("apps.example.net").contains("under the platform domain"));
        assert!(parse_domain("myapps.example.net", apps).is_ok());
    }
}
