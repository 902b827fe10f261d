//! What a device presents (registration id, EK, SRK) and signs, and the enrollment a factory
//! writes for it.

use device_client::tpm::Tpm;
use dps_protocol::sas::{self, Signer, REGISTRATION_KEY_NAME};
use dps_protocol::wire::{
    Base64Bytes, DeviceRegistration, KeyCertification, Quote, TpmAttestation,
};
use dps_protocol::RegistrationId;
use provisioning_service::enrollment::{Attestation, IndividualEnrollment, ProvisioningStatus};
use serde_json::Value;

use crate::service::ID_SCOPE;

/// An enabled TPM enrollment of `ek` under `registration_id`, no pinned hub or device id.
#[must_use]
pub fn enrollment(registration_id: &str, ek: &[u8]) -> IndividualEnrollment {
    IndividualEnrollment {
        registration_id: registration_id.to_owned(),
        device_id: None,
        attestation: Attestation::tpm(ek.to_vec()),
        iot_hub_host_name: None,
        provisioning_status: ProvisioningStatus::Enabled,
        etag: None,
        created_date_time_utc: None,
        last_updated_date_time_utc: None,
        enrollment_group_id: None,
        extra: serde_json::Map::new(),
    }
}

/// What a device presents: its registration id, EK and SRK.
#[derive(Clone)]
pub struct Device {
    pub registration_id: String,
    pub ek: Vec<u8>,
    pub srk: Vec<u8>,
    /// The `payload` of its register body (for a custom allocation webhook).
    pub payload: Option<Value>,
    /// The EK certificate it sends (for a TPM enrollment group), and CA certificates with it.
    pub ek_certificate: Option<Vec<u8>>,
    pub ek_certificate_chain: Vec<Vec<u8>>,
    /// The attestation key it shows with its challenge request, and the quote it sends with
    /// its SAS (remote attestation).
    pub attestation_key: Option<Vec<u8>>,
    pub quote: Option<Quote>,
    /// The certification of its CSR's key by its attestation key, sent with its SAS.
    pub certify: Option<KeyCertification>,
    /// The PKCS#10 request (DER) it sends for a certificate (DPS 2026-04-01 `csr`).
    pub csr: Option<Vec<u8>>,
}

impl Device {
    pub fn of(tpm: &mut Tpm) -> Self {
        let ek = tpm.endorsement_key().unwrap();
        let srk = tpm.storage_root_key().unwrap();
        Self {
            registration_id: RegistrationId::from_endorsement_key(&ek)
                .as_str()
                .to_owned(),
            ek,
            srk,
            payload: None,
            ek_certificate: None,
            ek_certificate_chain: Vec::new(),
            attestation_key: None,
            quote: None,
            certify: None,
            csr: None,
        }
    }

    /// What `tpm` presents, with the EK certificate from its NV index.
    pub fn with_certificate(tpm: &mut Tpm) -> Self {
        Self {
            ek_certificate: Some(
                tpm.endorsement_key_certificate()
                    .unwrap()
                    .expect("swtpm_setup stored an EK certificate"),
            ),
            ..Self::of(tpm)
        }
    }

    pub fn body(&self) -> Value {
        serde_json::to_value(DeviceRegistration {
            registration_id: self.registration_id.clone(),
            tpm: Some(TpmAttestation {
                endorsement_key_certificate: self.ek_certificate.clone().map(Base64Bytes),
                endorsement_key_certificate_chain: self
                    .ek_certificate_chain
                    .iter()
                    .cloned()
                    .map(Base64Bytes)
                    .collect(),
                attestation_key: self.attestation_key.clone().map(Base64Bytes),
                quote: self.quote.clone(),
                certify: self.certify.clone(),
                ..TpmAttestation::keys(self.ek.clone(), self.srk.clone())
            }),
            csr: self.csr.clone().map(Base64Bytes),
            payload: self.payload.clone(),
        })
        .unwrap()
    }

    pub fn sas<S: Signer<Error: std::fmt::Debug>>(&self, signer: &mut S, expiry: u64) -> String {
        let resource = sas::registration_resource(ID_SCOPE, &self.registration_id);
        sas::build_token(&resource, expiry, Some(REGISTRATION_KEY_NAME), signer).unwrap()
    }
}
