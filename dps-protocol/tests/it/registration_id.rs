use dps_protocol::registration_id::MAX_LEN;
use dps_protocol::{RegistrationId, RegistrationIdError};

#[test]
fn accepted() {
    for id in [
        "a",
        "device-1",
        "my.device_01:x",
        "0",
        "x-",
        &"a".repeat(MAX_LEN),
    ] {
        assert_eq!(RegistrationId::parse(id).expect(id).as_str(), id);
    }
}

#[test]
fn refused_with_a_reason() {
    let long = "a".repeat(MAX_LEN + 1);
    let cases: Vec<(&str, RegistrationIdError)> = vec![
        ("", RegistrationIdError::Empty),
        (&long, RegistrationIdError::TooLong { len: 129, max: 128 }),
        ("Dévice", RegistrationIdError::InvalidCharacter('é')),
        ("../etc/passwd", RegistrationIdError::InvalidCharacter('/')),
        ("a%2f..", RegistrationIdError::InvalidCharacter('%')),
        (
            "x'; drop table enrollments; --",
            RegistrationIdError::InvalidCharacter('\''),
        ),
        ("a b", RegistrationIdError::InvalidCharacter(' ')),
        ("dévice", RegistrationIdError::InvalidCharacter('é')),
        ("a\0", RegistrationIdError::InvalidCharacter('\0')),
        ("a.", RegistrationIdError::InvalidLastCharacter),
        ("a_", RegistrationIdError::InvalidLastCharacter),
        ("a:", RegistrationIdError::InvalidLastCharacter),
    ];
    for (input, expected) in cases {
        assert_eq!(RegistrationId::parse(input), Err(expected), "{input:?}");
    }
}

/// DPS ids are case-insensitive: any case parses, to the one lowercase form.
#[test]
fn mixed_case_is_the_same_id_in_lowercase() {
    let id = RegistrationId::parse("Aziot-Dev-1").unwrap();
    assert_eq!(id.as_str(), "aziot-dev-1");
    assert_eq!(RegistrationId::parse("AZIOT-DEV-1"), Ok(id));
}

#[test]
fn derived_ids_are_valid_and_52_characters() {
    let id = RegistrationId::from_endorsement_key(b"any bytes");
    assert_eq!(id.as_str().len(), 52);
    assert_eq!(RegistrationId::parse(id.as_str()), Ok(id));
}
