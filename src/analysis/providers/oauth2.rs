//! OAuth2 client credentials (RFC 6749 §4.4) for the web and prometheus
//! providers' `authentication.oauth2`, as upstream does with Go's
//! `clientcredentials`: a token is fetched from `tokenUrl` for each
//! measurement and sent as `Authorization: Bearer <token>`. The client id
//! and secret go in a Basic header first; a token endpoint that refuses
//! that is asked again with them in the form (Go's auto-detection).

use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::Deserialize;

use crate::api::analysis::OAuth2Config;

fn set(s: &Option<String>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty())
}

/// Whether the metric asks for OAuth2 (upstream: a token URL is set).
pub fn configured(cfg: Option<&OAuth2Config>) -> bool {
    cfg.is_some_and(|c| set(&c.token_url))
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The `Authorization` header value for the configured client. Errors
/// never include the client secret.
pub async fn authorization(
    client: &reqwest::Client,
    cfg: &OAuth2Config,
) -> Result<HeaderValue, String> {
    let (Some(url), Some(id), Some(secret)) = (
        cfg.token_url.as_deref().filter(|s| !s.is_empty()),
        cfg.client_id.as_deref().filter(|s| !s.is_empty()),
        cfg.client_secret.as_deref().filter(|s| !s.is_empty()),
    ) else {
        return Err("missing mandatory parameter in metric for OAuth2 setup".into());
    };
    let mut form = vec![("grant_type", "client_credentials".to_string())];
    if !cfg.scopes.is_empty() {
        form.push(("scope", cfg.scopes.join(" ")));
    }
    // RFC 6749 §2.3.1: form-encoded, then Basic.
    let enc = query_escape;
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(id), enc(secret)));
    let in_header = client
        .post(url)
        .header(AUTHORIZATION, format!("Basic {basic}"))
        .form(&form)
        .send()
        .await;
    let response = match in_header {
        Ok(r) if r.status().is_success() => r,
        _ => {
            let mut with_params = form.clone();
            with_params.push(("client_id", id.to_string()));
            with_params.push(("client_secret", secret.to_string()));
            client
                .post(url)
                .form(&with_params)
                .send()
                .await
                .map_err(|e| format!("oauth2: cannot fetch token from {url}: {e}"))?
        }
    };
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let token: Option<TokenResponse> = serde_json::from_str(&body).ok();
    if !status.is_success() {
        let why = token
            .and_then(|t| {
                Some(format!(
                    "{}: {}",
                    t.error?,
                    t.error_description.unwrap_or_default()
                ))
            })
            .unwrap_or_else(|| status.to_string());
        return Err(format!("oauth2: cannot fetch token from {url}: {why}"));
    }
    let token = token
        .and_then(|t| Some((t.access_token.filter(|a| !a.is_empty())?, t.token_type)))
        .ok_or_else(|| format!("oauth2: server response from {url} missing access_token"))?;
    // Go's Token.Type(): "Bearer" for an empty or any-case "bearer" type.
    let kind = match token.1.as_deref() {
        None | Some("") => "Bearer".to_string(),
        Some(t) if t.eq_ignore_ascii_case("bearer") => "Bearer".to_string(),
        Some(t) => t.to_string(),
    };
    let mut value = HeaderValue::from_str(&format!("{kind} {}", token.0))
        .map_err(|_| format!("oauth2: the token from {url} is not a valid header value"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Go's url.QueryEscape: unreserved characters kept, space as '+', every
/// other byte as %XX.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Reply, TestServer};
    use serde_json::json;

    fn client() -> reqwest::Client {
        crate::analysis::providers::http_client(std::time::Duration::from_secs(5), false)
            .expect("a client")
    }

    fn cfg(url: &str) -> OAuth2Config {
        OAuth2Config {
            token_url: Some(format!("{url}/token")),
            client_id: Some("id".into()),
            client_secret: Some("s3cr&t".into()),
            scopes: vec!["read".into(), "metrics".into()],
        }
    }

    #[tokio::test]
    async fn a_token_is_fetched_with_the_client_credentials_in_a_basic_header() {
        let server = TestServer::start(vec![Reply::json(
            200,
            json!({"access_token": "abc", "token_type": "bearer"}),
        )])
        .await
        .unwrap();
        let value = authorization(&client(), &cfg(&server.url())).await.unwrap();
        assert_eq!(value.to_str().unwrap(), "Bearer abc");
        let req = &server.requests()[0];
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/token");
        let basic = base64::engine::general_purpose::STANDARD.encode("id:s3cr%26t");
        assert_eq!(
            req.header("authorization"),
            Some(format!("Basic {basic}").as_str())
        );
        assert_eq!(req.body, "grant_type=client_credentials&scope=read+metrics");
    }

    #[tokio::test]
    async fn a_server_refusing_the_header_is_asked_with_the_credentials_in_the_form() {
        let server = TestServer::start(vec![
            Reply::json(401, json!({"error": "invalid_client"})),
            Reply::json(200, json!({"access_token": "xyz"})),
        ])
        .await
        .unwrap();
        let value = authorization(&client(), &cfg(&server.url())).await.unwrap();
        assert_eq!(value.to_str().unwrap(), "Bearer xyz");
        let second = &server.requests()[1];
        assert_eq!(second.header("authorization"), None);
        assert!(
            second.body.contains("client_id=id&client_secret=s3cr%26t"),
            "{}",
            second.body
        );
    }

    #[tokio::test]
    async fn failures_say_why_without_the_secret() {
        let server = TestServer::start(vec![Reply::json(
            400,
            json!({"error": "invalid_scope", "error_description": "no such scope"}),
        )])
        .await
        .unwrap();
        let err = authorization(&client(), &cfg(&server.url()))
            .await
            .unwrap_err();
        assert!(err.contains("invalid_scope: no such scope"), "{err}");
        assert!(!err.contains("s3cr"), "{err}");
        let mut missing = cfg(&server.url());
        missing.client_secret = None;
        assert_eq!(
            authorization(&client(), &missing).await.unwrap_err(),
            "missing mandatory parameter in metric for OAuth2 setup"
        );
    }
}
