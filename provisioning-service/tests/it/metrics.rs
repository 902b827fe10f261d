//! `/metrics` on its own listener, scraped after real registrations: the counters move with
//! the right labels, and no label carries a device's id or key.

use sqlx::PgPool;
use test_support::{Device, TestApp, TestTpm, HUBS};

async fn scrape(app: &TestApp) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(provisioning_service::server::serve_plain(
        provisioning_service::http::metrics_router(app.app.clone()),
        listener,
        std::future::pending(),
    ));
    let response = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();
    assert!(response.status().is_success());
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    response.text().await.unwrap()
}

/// The value of the sample `name{labels}`, if present.
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn metrics_count_registrations_refusals_and_requests_without_device_ids(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    // The enrolled TPM asking under another id: refused, the reason counted.
    let stranger = Device {
        registration_id: "not-enrolled".to_owned(),
        ..device.clone()
    };
    app.enroll(&device.registration_id, &device.ek).await;
    let (status, _) = app
        .put_register(&stranger.registration_id, &stranger.body(), None)
        .await;
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED);
    let operation_id = app.provision(&mut t, &device).await;
    app.poll(&device, &operation_id, &mut t.tpm).await;

    let text = scrape(&app).await;
    let hub = HUBS[1];
    for (series, value) in [
        (r#"dps_attestation_attempts_total{status="success",protocol="https"}"#.to_owned(), 1.0),
        (format!(r#"dps_registration_attempts_total{{iot_hub="{hub}",status="assigned"}}"#), 1.0),
        (format!(r#"dps_device_assignments_total{{iot_hub="{hub}"}}"#), 1.0),
        (r#"dps_refusals_total{step="challenge",reason="enrolled_under_another_id"}"#.to_owned(), 1.0),
        (
            r#"dps_http_request_duration_seconds_count{method="PUT",route="/{id_scope}/registrations/{registration_id}/register",status="202"}"#.to_owned(),
            1.0,
        ),
        (
            r#"dps_http_request_duration_seconds_count{method="PUT",route="/{id_scope}/registrations/{registration_id}/register",status="401"}"#.to_owned(),
            2.0,
        ),
        ("dps_db_pool_max_connections".to_owned(), f64::from(app.pool.options().get_max_connections())),
    ] {
        assert_eq!(sample(&text, &series), Some(value), "{series} in\n{text}");
    }
    assert!(
        text.contains(r#"dps_db_pool_connections{state="idle"}"#),
        "{text}"
    );
    assert!(
        text.contains("dps_db_pool_acquire_duration_seconds_count"),
        "{text}"
    );
    assert!(text.contains("dps_sealing_failures_total 0"), "{text}");
    // Nothing a device sent or owns is a label.
    for secret in [
        device.registration_id.as_str(),
        stranger.registration_id.as_str(),
        &operation_id,
    ] {
        assert!(!text.contains(secret), "{secret} in the metrics");
    }
}

/// The ready Grafana dashboard (`deploy/grafana`) queries only series the service exports.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn the_grafana_dashboard_uses_only_exported_series(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let mut t = TestTpm::recorded();
    let device = Device::of(&mut t.tpm);
    app.enroll(&device.registration_id, &device.ek).await;
    app.provision(&mut t, &device).await;
    let mut stranger = device.clone();
    stranger.registration_id = "stranger".to_owned();
    app.put_register(&stranger.registration_id, &stranger.body(), None)
        .await;
    let text = scrape(&app).await;

    let path = test_support::workspace_root().join("deploy/grafana/dps-tpm-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("dps_") {
                    assert!(
                        text.contains(&format!("{word}{{")) || text.contains(&format!("{word} ")),
                        "{word} (panel {}) is not exported",
                        panel["title"]
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 9);
}

/// Issue 25, item 2: any token is a method to HTTP, and each new one sent to a routed path (a
/// 405) became a series of `dps_http_request_duration_seconds` kept forever (5,000 methods of
/// 8,000 characters made one scrape 739 MB). Now every method no route answers is `other`.
/// The other labels take no client value: `route` is the router's template, `status` the
/// service's own, `iot_hub` a linked hub (a webhook's answer is checked against them), `step`,
/// `reason` and `outcome` are constants; `metrics_count_registrations_…` checks no device id
/// or key appears.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn invented_methods_add_no_series(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let url = app.register_url("any-device");
    let baseline = scrape(&app).await.len();
    for i in 0..200 {
        let method = format!("X{i}{}", "M".repeat(2_000));
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = app.client.request(method, &url).send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::METHOD_NOT_ALLOWED);
    }
    let text = scrape(&app).await;
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("dps_http_request_duration_seconds_count{"))
        .filter(|l| !l.contains("/readyz"))
        .collect();
    assert_eq!(series.len(), 1, "{series:?}");
    assert!(series[0].contains(r#"method="other""#), "{series:?}");
    assert_eq!(
        sample(
            &text,
            r#"dps_http_request_duration_seconds_count{method="other",route="/{id_scope}/registrations/{registration_id}/register",status="405"}"#
        ),
        Some(200.0)
    );
    // One histogram's lines more than before, whatever the methods were.
    assert!(
        text.len() < baseline + 4_096,
        "{} → {}",
        baseline,
        text.len()
    );
}
