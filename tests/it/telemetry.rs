//! OTLP trace export from `stint serve` to a real OTLP/HTTP receiver: spans
//! arrive protobuf-encoded, continue the caller's `traceparent`, carry the
//! request id and outcome, are flushed at shutdown, and hold no token.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;
use serde_json::json;

use crate::harness::issuer_yaml;
use crate::issuer::TestIssuer;
use crate::process::{free_port, serve, terminate};

/// An OTLP/HTTP collector: keeps every body POSTed to `/v1/traces`.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<Bytes>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
                let kept = kept.clone();
                async move {
                    assert_eq!(headers["content-type"], "application/x-protobuf");
                    kept.lock().unwrap().push(body);
                    ([("content-type", "application/x-protobuf")], Vec::new())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, bodies }
    }

    fn raw(&self) -> Vec<u8> {
        self.bodies.lock().unwrap().iter().flat_map(|b| b.to_vec()).collect()
    }

    /// Every span received, with its resource's attributes.
    fn spans(&self) -> Vec<(Vec<KeyValue>, Span)> {
        let mut out = Vec::new();
        for body in self.bodies.lock().unwrap().iter() {
            let request = ExportTraceServiceRequest::decode(body.as_ref()).expect("an OTLP protobuf body");
            for resource_spans in request.resource_spans {
                let resource = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
                for scope in resource_spans.scope_spans {
                    for span in scope.spans {
                        out.push((resource.clone(), span));
                    }
                }
            }
        }
        out
    }
}

fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text(attributes: &[KeyValue], key: &str) -> String {
    match attr(attributes, key) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        other => panic!("attribute {key}: {other:?} in {attributes:?}"),
    }
}

fn token_for(issuer: &TestIssuer, repository: &str) -> String {
    let mut claims = issuer.github();
    claims.insert("repository".into(), json!(repository));
    issuer.sign(&claims)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stint_serve_exports_request_spans_over_otlp() {
    let issuer = TestIssuer::start().await;
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stint.yaml");
    std::fs::write(
        &path,
        format!(
            "audit: {{ store: sqlite://audit.db, key_file: audit.key }}\nsigning: {{ key_file: signing.key }}\n\
             telemetry:\n  otlp:\n    endpoint: {url}\n    service_name: stint-test\n    resource: {{ deployment.environment: test }}\n\
             issuers:\n{issuers}grants:\n  deploy:\n    kind: token\n    ttl: 5m\n    audience: deploy-api\n    allow:\n      - issuer: ci\n        claims:\n          repository: acme/api\n",
            url = receiver.url,
            issuers = issuer_yaml("ci", &issuer, "github", ""),
        ),
    )
    .unwrap();
    let port = free_port();
    let mut child = serve(&path, port, free_port()).await;
    let http = reqwest::Client::new();

    // A caller already inside a trace (W3C traceparent, sampled).
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let caller_token = token_for(&issuer, "acme/api");
    let allowed = http
        .post(format!("http://127.0.0.1:{port}/v1/issue/deploy"))
        .bearer_auth(&caller_token)
        .header("traceparent", format!("00-{trace_id}-{parent_id}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    let allowed_id = allowed.headers()["x-request-id"].to_str().unwrap().to_string();
    let issued: serde_json::Value = allowed.json().await.unwrap();
    let issued_token = issued["token"].as_str().expect("a token in the answer").to_string();

    let denied = http
        .post(format!("http://127.0.0.1:{port}/v1/issue/deploy"))
        .bearer_auth(token_for(&issuer, "acme/other"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let denied_id = denied.headers()["x-request-id"].to_str().unwrap().to_string();

    // Spans still queued are exported at shutdown.
    terminate(&child);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("stint exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");

    let spans = receiver.spans();
    assert!(!spans.is_empty(), "no spans reached the receiver");
    let (resource, _) = &spans[0];
    assert_eq!(text(resource, "service.name"), "stint-test");
    assert_eq!(text(resource, "deployment.environment"), "test");

    let server_span = |request_id: &str| {
        spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| attr(&s.attributes, "request_id").is_some() && text(&s.attributes, "request_id") == request_id)
            .unwrap_or_else(|| panic!("no span for request {request_id}"))
    };
    let served = server_span(&allowed_id);
    assert_eq!(served.name, "POST /v1/issue/{grant}");
    assert_eq!(served.kind, SpanKind::Server as i32);
    assert_eq!(hex(&served.trace_id), trace_id, "the caller's trace continues");
    assert_eq!(hex(&served.parent_span_id), parent_id);
    assert_eq!(text(&served.attributes, "http.route"), "/v1/issue/{grant}");
    assert_eq!(text(&served.attributes, "http.response.status_code"), "200");
    assert_eq!(text(&served.attributes, "stint.grant"), "deploy");
    assert_eq!(text(&served.attributes, "stint.kind"), "token");
    assert_eq!(text(&served.attributes, "stint.outcome"), "issued");

    // The steps are children of the request's span, in the same trace.
    for step in ["verify", "provider.issue", "audit.append"] {
        let child_span = spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.name == step && s.parent_span_id == served.span_id)
            .unwrap_or_else(|| panic!("no `{step}` span under the request"));
        assert_eq!(child_span.trace_id, served.trace_id);
    }
    let verify = spans.iter().map(|(_, s)| s).find(|s| s.name == "verify").unwrap();
    assert_eq!(
        text(&verify.attributes, "stint.issuer"),
        "ci",
        "the issuer's name in config"
    );

    let refused = server_span(&denied_id);
    assert_ne!(
        hex(&refused.trace_id),
        trace_id,
        "a request without traceparent starts its own trace"
    );
    assert!(refused.parent_span_id.is_empty());
    assert_eq!(text(&refused.attributes, "stint.outcome"), "denied");
    assert_eq!(text(&refused.attributes, "http.response.status_code"), "403");
    assert_ne!(
        refused.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32),
        "a denial is an answer, not a failure"
    );

    // Nothing secret leaves through the exporter.
    let raw = receiver.raw();
    for (what, secret) in [("caller token", &caller_token), ("issued token", &issued_token)] {
        let signature = secret.rsplit('.').next().unwrap();
        assert!(
            !raw.windows(signature.len()).any(|w| w == signature.as_bytes()),
            "the {what} is in the exported spans"
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
