//! AnalysisRuns on a real control plane, measured against real servers: web
//! checks hit a local HTTP server, job metrics run real Jobs whose pods kwok
//! completes, fails, or leaves unable to pull their image.

mod support;

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::batch::v1::Job;
use rollouts::api::analysis::{AnalysisPhase, AnalysisRun};
use rollouts::testing::{Reply, TestServer};
use serde_json::json;
use support::{TestEnv, wait_for, wait_run_completed};

fn web_run(name: &str, url: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: AnalysisRun
metadata: {{name: {name}}}
spec:
  metrics:
  - name: rate
    count: 2
    interval: 1s
    successCondition: result >= 0.95
    provider:
      web:
        url: "{url}"
        jsonPath: "{{$.rate}}"
{extra}"#
    )
}

/// The run's status as stored, as JSON.
async fn raw_status(env: &TestEnv, name: &str) -> Result<serde_json::Value> {
    let resource = kube::api::ApiResource::erase::<AnalysisRun>(&());
    let api = kube::Api::<kube::api::DynamicObject>::namespaced_with(
        env.client.clone(),
        &env.ns,
        &resource,
    );
    Ok(api.get(name).await?.data["status"].clone())
}

fn phase(run: &AnalysisRun) -> Option<AnalysisPhase> {
    run.status.as_ref().and_then(|s| s.phase)
}

#[tokio::test]
async fn web_checks_pass_and_fail_with_upstreams_messages() -> Result<()> {
    let env = TestEnv::new("analysis-web").await?;
    let good = TestServer::start(vec![Reply::json(200, json!({"rate": 0.99}))]).await?;
    let bad = TestServer::start(vec![Reply::json(200, json!({"rate": 0.5}))]).await?;
    env.apply_yaml(&web_run("good", &good.url(), "")).await?;
    env.apply_yaml(&web_run("bad", &bad.url(), "")).await?;

    let run = wait_run_completed(&env, "good").await?;
    let status = run.status.clone().unwrap_or_default();
    assert_eq!(phase(&run), Some(AnalysisPhase::Successful), "{status:?}");
    let result = &status.metric_results[0];
    assert_eq!((result.count, result.successful), (2, 2));
    assert_eq!(result.measurements.len(), 2);
    assert!(
        result
            .measurements
            .iter()
            .all(|m| m.value.as_deref() == Some("0.99"))
    );
    let gap = result.measurements[1]
        .started_at
        .as_ref()
        .unwrap()
        .0
        .as_second()
        - result.measurements[0]
            .finished_at
            .as_ref()
            .unwrap()
            .0
            .as_second();
    assert!(gap >= 1, "interval 1s respected: {gap}s");
    assert_eq!(good.requests().len(), 2);
    let summary = status.run_summary.clone().unwrap_or_default();
    assert_eq!((summary.count, summary.successful), (1, 1));
    // The stored JSON has upstream's shape: zero counters are left out.
    let raw = raw_status(&env, "good").await?;
    let result = &raw["metricResults"][0];
    for zero in ["failed", "inconclusive", "error", "consecutiveError"] {
        assert!(result.get(zero).is_none(), "{zero} written: {result}");
    }
    assert_eq!(
        (&result["count"], &result["successful"]),
        (&json!(2), &json!(2))
    );
    assert_eq!(raw["runSummary"], json!({"count": 1, "successful": 1}));

    let run = wait_run_completed(&env, "bad").await?;
    let status = run.status.clone().unwrap_or_default();
    assert_eq!(phase(&run), Some(AnalysisPhase::Failed));
    assert_eq!(
        status.message.as_deref(),
        Some(r#"Metric "rate" assessed Failed due to failed (1) > failureLimit (0)"#)
    );
    assert_eq!(status.metric_results[0].measurements.len(), 1, "fails fast");
    assert_eq!(
        status.metric_results[0].measurements[0].value.as_deref(),
        Some("0.5")
    );

    let events = env.events("good").await?;
    assert!(
        events.iter().any(|(t, r, m)| t == "Normal"
            && r == "AnalysisRunSuccessful"
            && m == "Analysis Completed. Result: Successful"),
        "{events:?}"
    );
    let events = env.events("bad").await?;
    assert!(
        events
            .iter()
            .any(|(t, r, _)| t == "Warning" && r == "AnalysisRunFailed"),
        "{events:?}"
    );
    env.cleanup().await
}

#[tokio::test]
async fn secret_arguments_reach_the_server_but_never_the_status() -> Result<()> {
    let env = TestEnv::new("analysis-secret").await?;
    const TOKEN: &str = "s3cr3t-t0ken-4711";
    env.apply_yaml(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\nstringData: {{token: {TOKEN}}}\n"
    ))
    .await?;
    let server = TestServer::start(vec![Reply::json(200, json!({"rate": 1}))]).await?;
    // A closed port: the connection error names the URL, secret included.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let args = r#"  args:
  - name: token
    valueFrom:
      secretKeyRef: {name: creds, key: token}
"#;
    let with_token = |url: String| {
        format!(
            "{url}/check?token={{{{args.token}}}}\"\n        headers:\n        - key: Authorization\n          value: \"Bearer {{{{args.token}}}}"
        )
    };
    env.apply_yaml(&web_run("ok", &with_token(server.url()), args))
        .await?;
    let mut down = web_run(
        "down",
        &with_token(format!("http://127.0.0.1:{closed}")),
        args,
    );
    down = down.replace("    count: 2\n", "    consecutiveErrorLimit: 0\n");
    env.apply_yaml(&down).await?;

    let ok = wait_run_completed(&env, "ok").await?;
    assert_eq!(
        phase(&ok),
        Some(AnalysisPhase::Successful),
        "{:?}",
        ok.status
    );
    let seen = server.requests();
    assert_eq!(seen[0].path, format!("/check?token={TOKEN}"));
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    let down = wait_run_completed(&env, "down").await?;
    let status = down.status.clone().unwrap_or_default();
    assert_eq!(phase(&down), Some(AnalysisPhase::Error), "{status:?}");
    let message = status.metric_results[0].measurements[0]
        .message
        .clone()
        .unwrap_or_default();
    assert!(message.contains("token=*****"), "{message}");
    for run in [&ok, &down] {
        let text = serde_json::to_string(run)?;
        assert!(!text.contains(TOKEN), "secret leaked into {text}");
    }
    let events = format!("{:?}", env.events("down").await?);
    assert!(!events.contains(TOKEN));
    env.cleanup().await
}

#[tokio::test]
async fn a_missing_argument_or_secret_ends_the_run_in_error() -> Result<()> {
    let env = TestEnv::new("analysis-args").await?;
    let missing = web_run(
        "missing",
        "http://127.0.0.1:1/{{args.path}}",
        "  args:\n  - name: path\n",
    );
    env.apply_yaml(&missing).await?;
    let no_secret = web_run(
        "no-secret",
        "http://127.0.0.1:1/{{args.path}}",
        "  args:\n  - name: path\n    valueFrom: {secretKeyRef: {name: nope, key: k}}\n",
    );
    env.apply_yaml(&no_secret).await?;
    let run = wait_run_completed(&env, "missing").await?;
    assert_eq!(phase(&run), Some(AnalysisPhase::Error));
    assert_eq!(
        run.status.unwrap_or_default().message.as_deref(),
        Some(r#"Unable to resolve metric arguments: argument "path" was not supplied"#)
    );
    let run = wait_run_completed(&env, "no-secret").await?;
    let message = run.status.unwrap_or_default().message.unwrap_or_default();
    assert!(
        message.starts_with(r#"Unable to resolve metric arguments: secret "nope""#),
        "{message}"
    );
    env.cleanup().await
}

#[tokio::test]
async fn terminate_ends_an_endless_run_and_ttl_deletes_it() -> Result<()> {
    let env = TestEnv::new("analysis-terminate").await?;
    let server = TestServer::start(vec![Reply::json(200, json!({"rate": 1}))]).await?;
    let endless = web_run(
        "endless",
        &server.url(),
        "  ttlStrategy: {secondsAfterCompletion: 2}\n",
    )
    .replace("    count: 2\n", "");
    env.apply_yaml(&endless).await?;
    let api = env.api::<AnalysisRun>();
    wait_for("three measurements", Duration::from_secs(30), || async {
        let n = server.requests().len();
        Ok(if n >= 3 {
            Ok(())
        } else {
            Err(format!("{n} requests"))
        })
    })
    .await?;
    api.patch(
        "endless",
        &Default::default(),
        &kube::api::Patch::Merge(json!({"spec": {"terminate": true}})),
    )
    .await?;
    let run = wait_run_completed(&env, "endless").await?;
    let status = run.status.clone().unwrap_or_default();
    assert_eq!(phase(&run), Some(AnalysisPhase::Successful));
    assert_eq!(status.message.as_deref(), Some("Run Terminated"));
    wait_for(
        "the run to be deleted after its TTL",
        Duration::from_secs(20),
        || async {
            Ok(match api.get_opt("endless").await? {
                None => Ok(()),
                Some(_) => Err("still there".to_string()),
            })
        },
    )
    .await?;
    env.cleanup().await
}

fn job_run(name: &str, pod_labels: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: AnalysisRun
metadata: {{name: {name}}}
spec:
  metrics:
  - name: smoke
    provider:
      job:
        metadata:
          labels: {{team: qa}}
        spec:
          backoffLimit: 0
          template:
            metadata:
              labels: {{{pod_labels}}}
            spec:
              restartPolicy: Never
              containers: [{{name: check, image: "busybox:1"}}]
"#
    )
}

#[tokio::test]
async fn job_metrics_follow_their_jobs() -> Result<()> {
    let env = TestEnv::new("analysis-job").await?;
    env.apply_yaml(&job_run("passes", "app: smoke")).await?;
    env.apply_yaml(&job_run("fails", "kwok-fail: \"true\""))
        .await?;
    env.apply_yaml(&job_run("bad-image", "kwok-image-pull: fail"))
        .await?;

    let run = wait_run_completed(&env, "passes").await?;
    assert_eq!(
        phase(&run),
        Some(AnalysisPhase::Successful),
        "{:?}",
        run.status
    );
    let uid = run.metadata.uid.clone().unwrap_or_default();
    let m = &run.status.as_ref().unwrap().metric_results[0].measurements[0];
    let job_name = format!("{uid}.smoke.1");
    assert_eq!(
        m.metadata.as_ref().and_then(|md| md.get("job-name")),
        Some(&job_name)
    );
    let job = env.api::<Job>().get(&job_name).await?;
    let labels = job.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("analysisrun.argoproj.io/uid"), Some(&uid));
    assert_eq!(labels.get("team").map(String::as_str), Some("qa"));
    let owner = &job.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("AnalysisRun", uid.as_str())
    );

    let run = wait_run_completed(&env, "fails").await?;
    assert_eq!(phase(&run), Some(AnalysisPhase::Failed), "{:?}", run.status);
    assert_eq!(
        run.status.unwrap_or_default().message.as_deref(),
        Some(r#"Metric "smoke" assessed Failed due to failed (1) > failureLimit (0)"#)
    );

    let run = wait_run_completed(&env, "bad-image").await?;
    let status = run.status.clone().unwrap_or_default();
    assert_eq!(phase(&run), Some(AnalysisPhase::Inconclusive), "{status:?}");
    let message = status.metric_results[0].measurements[0]
        .message
        .clone()
        .unwrap_or_default();
    assert!(
        message.contains("has terminal error (ErrImagePull)"),
        "{message}"
    );
    env.cleanup().await
}

/// `provider.web.authentication`: upstream's OAuth2 client credentials (a
/// token fetched from the token endpoint the test serves, sent as a Bearer
/// token) and basicAuth reach the metric's server.
#[tokio::test]
async fn web_authentication_reaches_the_server() -> Result<()> {
    let env = TestEnv::new("analysis-web-auth").await?;
    let tokens = TestServer::start(vec![Reply::json(
        200,
        json!({"access_token": "t0k3n", "token_type": "bearer", "expires_in": 3600}),
    )])
    .await?;
    let metrics = TestServer::start(vec![Reply::json(200, json!({"rate": 0.99}))]).await?;
    let oauth = format!(
        "        authentication:\n          oauth2: {{tokenUrl: \"{}/oauth/token\", clientId: rollouts, clientSecret: s3cret, scopes: [metrics]}}\n",
        tokens.url()
    );
    env.apply_yaml(&web_run("oauth", &metrics.url(), &oauth))
        .await?;
    let run = wait_run_completed(&env, "oauth").await?;
    assert_eq!(
        phase(&run),
        Some(AnalysisPhase::Successful),
        "{:?}",
        run.status
    );
    let token_requests = tokens.requests();
    assert!(!token_requests.is_empty());
    assert_eq!(token_requests[0].path, "/oauth/token");
    assert!(
        token_requests[0]
            .body
            .contains("grant_type=client_credentials")
    );
    let seen: Vec<Option<String>> = metrics
        .requests()
        .iter()
        .map(|r| r.header("authorization").map(str::to_string))
        .collect();
    assert_eq!(seen, vec![Some("Bearer t0k3n".to_string()); 2]);
    // The secret is nowhere in the run's status.
    let status = serde_json::to_string(&run.status)?;
    assert!(!status.contains("s3cret"), "{status}");

    let basic = TestServer::start(vec![Reply::json(200, json!({"rate": 0.99}))]).await?;
    let credentials =
        "        authentication:\n          basicAuth: {username: reader, password: pa55}\n";
    env.apply_yaml(&web_run("basic", &basic.url(), credentials))
        .await?;
    let run = wait_run_completed(&env, "basic").await?;
    assert_eq!(
        phase(&run),
        Some(AnalysisPhase::Successful),
        "{:?}",
        run.status
    );
    // base64("reader:pa55")
    assert_eq!(
        basic.requests()[0].header("authorization"),
        Some("Basic cmVhZGVyOnBhNTU=")
    );

    // A token endpoint that refuses: the measurement errors, saying why.
    let refusing = TestServer::start(vec![Reply::json(
        401,
        json!({"error": "invalid_client", "error_description": "unknown client"}),
    )])
    .await?;
    let oauth = format!(
        "        authentication:\n          oauth2: {{tokenUrl: \"{}/token\", clientId: nobody, clientSecret: x}}\n",
        refusing.url()
    );
    env.apply_yaml(&web_run("refused", &metrics.url(), &oauth))
        .await?;
    let runs = env.api::<AnalysisRun>();
    let message = wait_for(
        "the refused run's first measurement",
        Duration::from_secs(30),
        || async {
            let status = runs.get("refused").await?.status.unwrap_or_default();
            let first = status
                .metric_results
                .first()
                .and_then(|r| r.measurements.first())
                .cloned();
            Ok(match first {
                Some(m) if m.phase == AnalysisPhase::Error => Ok(m.message.unwrap_or_default()),
                other => Err(format!("{other:?}")),
            })
        },
    )
    .await?;
    assert!(
        message.contains("invalid_client: unknown client"),
        "{message}"
    );
    env.cleanup().await
}
