//! CustomResourceDefinitions from YAML files, server-side applied, then
//! waited for until the API server serves them (Established). Used for our
//! own CRDs and for the Gateway API's in the data-plane rig; free of the
//! rest of the test support, so the demo's rig binary can include it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

/// Applies each file (one CRD each) under field manager `manager` and waits
/// up to 30 s per CRD until it is Established.
pub async fn apply(client: &Client, files: &[impl AsRef<Path>], manager: &str) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let ssa = PatchParams::apply(manager).force();
    for file in files {
        let file = file.as_ref();
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &ssa, &Patch::Apply(&crd))
            .await
            .with_context(|| format!("applying {}", file.display()))?;
        let began = Instant::now();
        loop {
            let established = api
                .get(&name)
                .await?
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            if began.elapsed() > Duration::from_secs(30) {
                bail!("CRD {name} was not Established within 30s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
