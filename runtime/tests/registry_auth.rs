//! Registry authentication (basic credentials exchanged for a bearer token) against a registry
//! stand-in on a loopback socket that enforces it.

use runtime::config::RegistryConfig;
use runtime::image::{ImageRef, RegistryClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:00","size":1},"layers":[]}"#;

/// Answers like distribution with token auth: 401 + challenge without the token, a token for
/// the right basic credentials, the manifest with the token.
async fn serve(listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let port = s.local_addr().map(|a| a.port()).unwrap_or(0);
            let path = req.split_whitespace().nth(1).unwrap_or("").to_owned();
            let has = |h: &str| req.lines().any(|l| l.eq_ignore_ascii_case(h));
            let (status, headers, body) = if path.starts_with("/token") {
                // alice:secret
                if has("authorization: Basic YWxpY2U6c2VjcmV0")
                    && path.contains("scope=repository%3Aapp%2Fweb%3Apull")
                {
                    ("200 OK", String::new(), r#"{"token":"t0k3n"}"#.to_owned())
                } else {
                    ("401 Unauthorized", String::new(), String::new())
                }
            } else if has("authorization: Bearer t0k3n") {
                (
                    "200 OK",
                    "content-type: application/vnd.oci.image.manifest.v1+json\r\n".to_owned(),
                    MANIFEST.to_owned(),
                )
            } else {
                (
                    "401 Unauthorized",
                    format!(
                        "www-authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"test\"\r\n"
                    ),
                    String::new(),
                )
            };
            let answer = format!(
                "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(answer.as_bytes()).await;
        });
    }
}

#[tokio::test]
async fn bearer_token_is_fetched_with_basic_credentials() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let host = listener.local_addr()?.to_string();
    tokio::spawn(serve(listener));
    let image = ImageRef::parse(&format!("{host}/app/web:1"))?;

    let anonymous = RegistryClient::new(vec![])?;
    let err = anonymous
        .manifest(&image, "1")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("401") || err.contains("unauthorized"), "{err}");

    let client = RegistryClient::new(vec![RegistryConfig {
        host: host.clone(),
        insecure: false,
        username: Some("alice".into()),
        password: Some("secret".into()),
        token: None,
    }])?;
    let m = client.manifest(&image, "1").await?;
    assert_eq!(m.bytes, MANIFEST.as_bytes());
    assert_eq!(m.media_type, "application/vnd.oci.image.manifest.v1+json");
    Ok(())
}
