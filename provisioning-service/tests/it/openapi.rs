//! `/openapi.json`: served, well-formed (every operation answers, every `$ref` resolves),
//! describing every route the
//! router serves and no other, and holding to Microsoft's published DPS specification
//! (`../shared/dps-rest-spec`, 2026-04-01, a superset of 2021-10-01) for the operations both
//! have: same paths and methods, and no request or response field DPS does not define, but for
//! the intentional differences listed here.

use std::collections::BTreeSet;

use serde_json::Value;
use sqlx::PgPool;
use test_support::TestApp;

/// Fields this service adds to DPS's shapes on purpose (docs/protocol.md §9), by schema.
const EXTENSIONS: &[(&str, &str)] = &[
    // The device's EK certificate for TPM enrollment groups.
    ("TpmAttestation", "endorsementKeyCertificate"),
    ("TpmAttestation", "endorsementKeyCertificateChain"),
    // Read-only: the group a device's record was made for.
    ("IndividualEnrollment", "enrollmentGroupId"),
    // Read-only member count of a TPM enrollment group.
    ("EnrollmentGroup", "deviceCount"),
    // The group attestation DPS does not have.
    ("GroupAttestation", "tpmEkCertificate"),
    // One registration-state type for both APIs: the service API never fills `tpm` (a test in
    // allocation.rs holds the served body to DPS's `DeviceRegistrationState`).
    ("DeviceRegistrationResult", "tpm"),
    // Likewise the chain DPS 2026-04-01 returns to the device: never on the service API.
    ("DeviceRegistrationResult", "issuedCertificateChain"),
    // Remote attestation (docs/protocol.md §10): the attestation key with the challenge, the
    // quote with the SAS, and what the registration proved (service API only).
    ("TpmAttestation", "attestationKey"),
    ("TpmAttestation", "quote"),
    ("DeviceRegistrationResult", "attestation"),
];

/// Routes this service serves that DPS does not have.
const OWN_ROUTES: &[&str] = &[
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/admin",
    "/admin/app.js",
    "/admin/app.css",
    // Forget a device's pinned PCR values (remote attestation).
    "/registrations/{registration_id}/attestationPins",
    // A credential policy's CRL (certificate issuance).
    "/credentialPolicies/{name}/crl",
];

/// `/a/{x}/b` → `/a/{}/b`: route templates compare without their parameter names.
fn normalize(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

/// Every (route, method) the router in src/http.rs serves, read from its source.
fn router_routes() -> BTreeSet<(String, String)> {
    let source = std::fs::read_to_string(
        test_support::workspace_root().join("provisioning-service/src/http.rs"),
    )
    .unwrap();
    let body = &source[source.find("pub fn router(").unwrap()..];
    let body = &body[..body.find("\n}\n").unwrap()];
    let mut routes = BTreeSet::new();
    for call in body.split(".route(").skip(1) {
        let path = call.split('"').nth(1).unwrap();
        // The call's text up to the next chained router method.
        let call = call.split("\n        .").next().unwrap();
        for method in ["get", "put", "post", "delete"] {
            if call.contains(&format!("{method}(")) {
                routes.insert((normalize(path), method.to_owned()));
            }
        }
    }
    assert!(routes.len() >= 20, "{routes:?}");
    routes
}

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete"].contains(&method.as_str()) {
                ops.insert((normalize(path), method.clone()));
            }
        }
    }
    ops
}

/// Every `$ref` in `value`.
fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// The schema at `reference` (`#/components/schemas/X` or `#/definitions/X`) and its name.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> (Option<String>, &'a Value) {
    let schema = schema.get("items").unwrap_or(schema);
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap().to_owned();
            let pointer = r.trim_start_matches('#');
            (Some(name), doc.pointer(pointer).unwrap())
        }
        None => (None, schema),
    }
}

fn property_names(schema: &Value) -> BTreeSet<String> {
    schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn the_openapi_document_matches_the_router_and_dps(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let response = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let text = response.text().await.unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    // Validates: it reads as an OpenAPI 3.1 document (the `oas3` model), and every operation's
    // request body and responses resolve.
    let spec = oas3::from_json(&text).unwrap();
    assert_eq!(spec.validate_version().unwrap().major, 3);
    for (path, method, op) in spec.operations() {
        op.request_body(&spec)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(!op.responses(&spec).is_empty(), "{method} {path}");
    }
    // Well-formed: a title, every operation with responses, every reference resolving.
    assert!(doc["info"]["title"].is_string());
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in &all {
        assert!(
            doc.pointer(r.trim_start_matches('#')).is_some(),
            "{r} does not resolve"
        );
    }

    // Every route served is described, and nothing else.
    assert_eq!(operations(&doc), router_routes());

    // The newest stable version: 2021-10-01's fields and operations and 2026-04-01's `csr`,
    // `issuedCertificateChain` and `credentialPolicyName`.
    let spec_dir = test_support::workspace_root().join("../shared/dps-rest-spec/stable/2026-04-01");
    let mut compared = 0;
    let mut dps_operations = BTreeSet::new();
    for file in ["service.json", "device.json"] {
        let spec: Value =
            serde_json::from_slice(&std::fs::read(spec_dir.join(file)).unwrap()).unwrap();
        dps_operations.extend(operations(&spec));
        for (path, item) in spec["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let key = (normalize(path), method.clone());
                assert!(
                    operations(&doc).contains(&key),
                    "DPS's {method} {path} is not implemented"
                );
                let ours = doc["paths"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .find(|(p, _)| normalize(p) == key.0)
                    .map(|(_, v)| &v[method])
                    .unwrap();
                // Request bodies and success responses: our fields are DPS's fields.
                let mut pairs = Vec::new();
                if let Some(body) = ours.pointer("/requestBody/content/application~1json/schema") {
                    let theirs = op["parameters"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|p| p["in"] == "body")
                        .map(|p| &p["schema"]);
                    if let Some(theirs) = theirs {
                        pairs.push((body, theirs));
                    }
                }
                for status in ["200", "202"] {
                    let mine = ours.pointer(&format!(
                        "/responses/{status}/content/application~1json/schema"
                    ));
                    let theirs = op.pointer(&format!("/responses/{status}/schema"));
                    if let (Some(mine), Some(theirs)) = (mine, theirs) {
                        pairs.push((mine, theirs));
                    }
                }
                for (mine, theirs) in pairs {
                    let (name, mine) = resolve(&doc, mine);
                    let (_, theirs) = resolve(&spec, theirs);
                    let allowed = property_names(theirs);
                    for field in property_names(mine) {
                        let extension = EXTENSIONS
                            .iter()
                            .any(|(s, f)| Some(*s) == name.as_deref() && *f == field);
                        assert!(
                            allowed.contains(&field) || extension,
                            "{method} {path}: {field} of {name:?} is not in DPS's schema"
                        );
                    }
                    compared += 1;
                }
            }
        }
    }
    // Every operation described is DPS's, but the listed ones of our own.
    for (path, method) in operations(&doc) {
        let own = OWN_ROUTES.iter().any(|r| normalize(r) == path);
        assert!(
            own || dps_operations.contains(&(path.clone(), method.clone())),
            "{method} {path} is neither DPS's nor listed as this service's own"
        );
    }
    assert!(compared >= 15, "{compared} schemas compared");
}
