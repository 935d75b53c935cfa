//! openapi.yaml and the routers describe the same API: every route is in
//! the spec and every path of the spec is served, with the same method.

use std::collections::BTreeSet;

use crate::harness::{DEPLOY_GRANT, TestBroker, issuer_yaml};
use crate::issuer::TestIssuer;

/// `/v1/leases/{lease_id}/revoke` → `/v1/leases/{}/revoke`.
fn normalized(path: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in path.chars() {
        match c {
            '{' => {
                inside = true;
                out.push_str("{}");
            }
            '}' => inside = false,
            _ if inside => {}
            _ => out.push(c),
        }
    }
    out
}

fn spec_operations() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    let spec: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut operations = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                operations.insert((method.to_uppercase(), normalized(path)));
            }
        }
    }
    operations
}

#[tokio::test]
async fn every_route_is_in_the_spec_and_every_spec_path_is_served() {
    let served: BTreeSet<(String, String)> = stint::http::public_routes()
        .into_iter()
        .chain(stint::http::admin_routes())
        .map(|(method, path, _)| (method.to_string(), normalized(path)))
        .collect();
    let spec = spec_operations();
    let undocumented: Vec<_> = served.difference(&spec).collect();
    let unserved: Vec<_> = spec.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.yaml: {undocumented:?}"
    );
    assert!(unserved.is_empty(), "openapi.yaml paths with no route: {unserved:?}");

    // And the table is what the running broker serves: no route answers
    // the fallback's 404 or 405.
    let issuer = TestIssuer::start().await;
    let broker = TestBroker::start_with(&issuer_yaml("ci", &issuer, "github", ""), DEPLOY_GRANT, "").await;
    let admin: BTreeSet<String> = stint::http::admin_routes()
        .into_iter()
        .map(|(_, path, _)| path.to_string())
        .collect();
    for (method, path) in &served {
        let concrete = path.replace("{}", "x");
        let base = if admin.iter().any(|p| normalized(p) == *path) {
            &broker.admin_url
        } else {
            &broker.url
        };
        let request = broker
            .http
            .request(method.parse().unwrap(), format!("{base}{concrete}"));
        let answer = crate::harness::answer(request.send().await.unwrap()).await;
        assert_ne!(answer.status, 405, "{method} {path}: {}", answer.text);
        assert_ne!(answer.code(), "not_found", "{method} {path}: {}", answer.text);
    }
}
