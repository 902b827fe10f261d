use base64::Engine;
use dps_protocol::sas::{
    build_token, encode_resource, registration_resource, string_to_sign, SasToken, SoftwareKey,
    VerifyPolicy, REGISTRATION_KEY_NAME,
};
use dps_protocol::SasError;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
const NOW: u64 = 1_800_000_000;

fn resource() -> String {
    registration_resource("0ne00ABCDEF", "device-1")
}

fn policy(resource: &str) -> VerifyPolicy<'_> {
    VerifyPolicy {
        resource,
        key_name: Some(REGISTRATION_KEY_NAME),
        now: NOW,
        max_skew: 30,
        max_lifetime: 3600,
    }
}

fn token(expiry: u64) -> String {
    build_token(
        &resource(),
        expiry,
        Some(REGISTRATION_KEY_NAME),
        &mut SoftwareKey(KEY),
    )
    .expect("sign")
}

fn verify(token: &str) -> Result<(), SasError> {
    let r = resource();
    SasToken::parse(token)?.verify(KEY, &policy(&r))
}

#[test]
fn token_layout_matches_the_azure_clients() {
    let t = token(NOW + 60);
    let sr = "0ne00abcdef%2Fregistrations%2Fdevice-1";
    assert_eq!(encode_resource(&resource()), sr);
    let sig = dps_protocol::crypto::hmac_sha256(KEY, &[string_to_sign(sr, NOW + 60).as_bytes()]);
    let sig = base64::engine::general_purpose::STANDARD
        .encode(sig)
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    assert_eq!(
        t,
        format!(
            "SharedAccessSignature sr={sr}&sig={sig}&se={}&skn=registration",
            NOW + 60
        )
    );
    verify(&t).expect("verifies");
}

#[test]
fn fields_parse_in_any_order_and_any_encoding_case() {
    let t = token(NOW + 60);
    let fields: Vec<&str> = t
        .trim_start_matches("SharedAccessSignature ")
        .split('&')
        .collect();
    let reordered = format!(
        "SharedAccessSignature {}&{}&{}&{}",
        fields[3], fields[2], fields[1], fields[0]
    );
    verify(&reordered).expect("any order");
    // A client that percent-encodes in lowercase signs what it sends; that verifies too.
    let sr = "0ne00abcdef%2fregistrations%2fdevice-1";
    let lower = {
        let sig =
            dps_protocol::crypto::hmac_sha256(KEY, &[string_to_sign(sr, NOW + 60).as_bytes()]);
        let sig = base64::engine::general_purpose::STANDARD.encode(sig);
        format!(
            "SharedAccessSignature sr={sr}&sig={}&se={}&skn=registration",
            sig.replace('+', "%2b")
                .replace('/', "%2f")
                .replace('=', "%3d"),
            NOW + 60
        )
    };
    verify(&lower).expect("lowercase percent-encoding");
}

#[test]
fn expiry_window() {
    verify(&token(NOW)).expect("expires now");
    verify(&token(NOW - 30)).expect("within skew");
    assert_eq!(verify(&token(NOW - 31)), Err(SasError::Expired));
    verify(&token(NOW + 3600 + 30)).expect("longest lifetime");
    assert_eq!(verify(&token(NOW + 3600 + 31)), Err(SasError::ExpiryTooFar));
    assert_eq!(verify(&token(u64::MAX)), Err(SasError::ExpiryTooFar));
}

#[test]
fn wrong_key_resource_and_key_name() {
    let t = token(NOW + 60);
    let r = resource();
    assert_eq!(
        SasToken::parse(&t)
            .expect("parse")
            .verify(b"another key", &policy(&r)),
        Err(SasError::InvalidSignature)
    );
    let other = registration_resource("0ne00ABCDEF", "device-2");
    assert_eq!(
        SasToken::parse(&t)
            .expect("parse")
            .verify(KEY, &policy(&other)),
        Err(SasError::ResourceMismatch)
    );
    let service = build_token(
        &r,
        NOW + 60,
        Some("provisioningserviceowner"),
        &mut SoftwareKey(KEY),
    )
    .expect("sign");
    assert_eq!(verify(&service), Err(SasError::KeyNameMismatch));
    let unnamed = build_token(&r, NOW + 60, None, &mut SoftwareKey(KEY)).expect("sign");
    assert_eq!(verify(&unnamed), Err(SasError::KeyNameMismatch));
    // The signature covers se: moving the expiry breaks it.
    let moved = t.replace(&format!("se={}", NOW + 60), &format!("se={}", NOW + 61));
    assert_eq!(verify(&moved), Err(SasError::InvalidSignature));
}

#[test]
fn malformed_tokens() {
    let t = token(NOW + 60);
    let cases: Vec<(String, SasError)> = vec![
        (
            t.replace("SharedAccessSignature ", "Bearer "),
            SasError::MissingScheme,
        ),
        (
            t.replace("&skn=registration", "&skn=registration&skn=x"),
            SasError::MalformedField { field: "skn" },
        ),
        (
            format!("{t}&extra=1"),
            SasError::MalformedField { field: "unknown" },
        ),
        (
            format!("{t}&novalue"),
            SasError::MalformedField { field: "pair" },
        ),
        (
            t.replace("&se=", "&xx="),
            SasError::MalformedField { field: "unknown" },
        ),
        (
            t.replace(&format!("&se={}", NOW + 60), ""),
            SasError::MalformedField { field: "se" },
        ),
        (
            t.replace(&format!("&se={}", NOW + 60), "&se=-5"),
            SasError::MalformedExpiry,
        ),
        (
            t.replace(&format!("&se={}", NOW + 60), "&se=99999999999999999999999"),
            SasError::MalformedExpiry,
        ),
        (
            t.replace(&format!("&se={}", NOW + 60), "&se="),
            SasError::MalformedExpiry,
        ),
        (
            "SharedAccessSignature sr=a&sig=AAAA&se=1".to_owned(),
            SasError::MalformedSignature,
        ),
        (
            "SharedAccessSignature sr=a&sig=%%%&se=1".to_owned(),
            SasError::MalformedSignature,
        ),
        (
            "SharedAccessSignature sr=%ff&sig=AAAA&se=1".to_owned(),
            SasError::MalformedField { field: "sr" },
        ),
        (
            "SharedAccessSignature sig=AAAA&se=1".to_owned(),
            SasError::MalformedField { field: "sr" },
        ),
        (
            "SharedAccessSignature sr=a&se=1".to_owned(),
            SasError::MalformedField { field: "sig" },
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(
            SasToken::parse(&input).map(|_| ()),
            Err(expected),
            "{input}"
        );
    }
}

#[test]
fn debug_never_prints_the_signature() {
    let t = SasToken::parse(&token(NOW + 60)).expect("parse");
    let shown = format!("{t:?}");
    // Not in any form Debug could print it: bytes as a list, hex, or the token's base64.
    let sig_b64 = Engine::encode(&base64::engine::general_purpose::STANDARD, t.signature);
    for form in [
        format!("{:?}", t.signature),
        hex::encode(t.signature),
        sig_b64.clone(),
        sig_b64
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D"),
    ] {
        assert!(!shown.contains(&form), "{shown} shows {form}");
    }
}
