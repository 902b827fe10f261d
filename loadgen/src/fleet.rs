//! The software devices: RSA keys generated once (the slow part: ~0.1 s per RSA-2048 key) and
//! kept in a file, so every run drives the same enrolled fleet; ECC EKs (`--ek-type`) derived
//! from the registration id instead, since they take microseconds.
//!
//! Each device has its own EK; the fleet shares one SRK (the service never relates SRKs across
//! devices, and it halves the key generation). The device model is `dps_protocol::software_tpm`,
//! proven against the same vectors as swtpm.

use std::path::Path;

use anyhow::Context as _;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use dps_protocol::ecc::{EccCurve, EccPrivateKey};
use dps_protocol::software_tpm::{PrivateSeedKey, SoftwareTpm};

use crate::attest::SoftAk;
use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use rsa::RsaPrivateKey;

const HEADER: &str =
    "# dps-loadgen device keys v1: line 1 the shared SRK, then one EK per device (PKCS#8, base64)";

/// One software device: its registration id, its software TPM and what it presents.
pub struct SoftDevice {
    pub registration_id: String,
    pub tpm: SoftwareTpm,
    /// The EK's and SRK's `TPM2B_PUBLIC`, as sent.
    pub ek: Vec<u8>,
    pub srk: Vec<u8>,
    /// Its attestation key, when the fleet attests ([`Fleet::attesting`]).
    pub ak: Option<SoftAk>,
    /// The CSR it sends, and the credential policy its enrollment names, when the fleet asks
    /// for certificates ([`Fleet::requesting_certificates`]).
    pub csr: Option<(Vec<u8>, String)>,
}

/// The EK the fleet's devices have: the RSA-2048 one DPS knows, or an ECC one (L-2 P-256, H-3
/// P-384).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FleetEk {
    Rsa2048,
    Ecc(EccCurve),
}

/// The ECC EK of the device `registration_id`: its scalar is a hash of the id, so every run
/// sees the same EK and nothing needs keeping. A load generator's keys, not secrets.
fn derived_ecc_ek(curve: EccCurve, registration_id: &str) -> anyhow::Result<EccPrivateKey> {
    (0u8..16)
        .find_map(|attempt| {
            let digest = ring::digest::digest(
                &ring::digest::SHA384,
                &[
                    b"dps-loadgen ECC EK\0",
                    registration_id.as_bytes(),
                    &[attempt],
                ]
                .concat(),
            );
            EccPrivateKey::from_scalar(curve, &digest.as_ref()[..curve.size()])
        })
        .context("no ECC scalar in range")
}

/// The devices of a run; device `i` is `{prefix}-{i:07}`.
pub struct Fleet {
    pub devices: Vec<SoftDevice>,
}

fn generate(count: usize) -> anyhow::Result<Vec<RsaPrivateKey>> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let per_thread = count.div_ceil(threads.max(1));
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let n = per_thread.min(count.saturating_sub(t * per_thread));
                scope.spawn(move || {
                    (0..n)
                        .map(|_| RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut keys = Vec::with_capacity(count);
        for worker in workers {
            let generated = worker
                .join()
                .map_err(|_| anyhow::anyhow!("a key generation thread panicked"))?;
            keys.extend(generated.context("generating an RSA key")?);
        }
        Ok(keys)
    })
}

fn read_keys(path: &Path) -> anyhow::Result<Vec<RsaPrivateKey>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let der = STANDARD
                .decode(line.trim())
                .context("a key line is not base64")?;
            RsaPrivateKey::from_pkcs8_der(&der).context("a key line is not a PKCS#8 RSA key")
        })
        .collect()
}

fn write_keys(path: &Path, keys: &[RsaPrivateKey]) -> anyhow::Result<()> {
    let mut text = String::from(HEADER);
    text.push('\n');
    for key in keys {
        let der = key.to_pkcs8_der().context("encoding a key")?;
        text.push_str(&STANDARD.encode(der.as_bytes()));
        text.push('\n');
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    // Write beside, then rename: an interrupted run never leaves half a file.
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("writing {}", path.display()))
}

impl Fleet {
    /// `count` devices with EKs of `ek`, from the key file at `path`, generating (and saving)
    /// the keys it lacks: the SRK, and the RSA EKs.
    pub fn load(path: &Path, count: usize, prefix: &str, ek: FleetEk) -> anyhow::Result<Self> {
        let mut keys = read_keys(path)?;
        let needed = if ek == FleetEk::Rsa2048 { count + 1 } else { 1 };
        if keys.len() < needed {
            let missing = needed - keys.len();
            eprintln!(
                "generating {missing} RSA-2048 keys into {} (once)",
                path.display()
            );
            keys.extend(generate(missing)?);
            write_keys(path, &keys)?;
        }
        let mut keys = keys.into_iter();
        let srk = keys.next().context("no SRK key")?;
        let devices = (0..count)
            .map(|i| {
                let registration_id = format!("{prefix}-{i:07}");
                let ek_key = match ek {
                    FleetEk::Rsa2048 => {
                        PrivateSeedKey::Rsa(Box::new(keys.next().context("no EK key")?))
                    }
                    FleetEk::Ecc(curve) => {
                        PrivateSeedKey::Ecc(derived_ecc_ek(curve, &registration_id)?)
                    }
                };
                let tpm =
                    SoftwareTpm::with_keys(ek_key, PrivateSeedKey::Rsa(Box::new(srk.clone())));
                Ok(SoftDevice {
                    registration_id,
                    ek: tpm.ek_public().to_tpm2b(),
                    srk: tpm.srk_public().to_tpm2b(),
                    tpm,
                    ak: None,
                    csr: None,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { devices })
    }

    /// Gives every device an attestation key (ECDSA P-256: made in microseconds, so made per
    /// run rather than kept).
    pub fn attesting(mut self) -> anyhow::Result<Self> {
        let rng = ring::rand::SystemRandom::new();
        for device in &mut self.devices {
            device.ak = Some(SoftAk::generate(&rng)?);
        }
        Ok(self)
    }

    /// Gives every device a CSR for a fresh ECDSA key — P-384 (the key DPS issues for), or
    /// P-256 with `p256` — to be issued under credential policy `policy`.
    pub fn requesting_certificates(mut self, policy: &str, p256: bool) -> anyhow::Result<Self> {
        let algorithm = if p256 {
            &rcgen::PKCS_ECDSA_P256_SHA256
        } else {
            &rcgen::PKCS_ECDSA_P384_SHA384
        };
        for device in &mut self.devices {
            let key = rcgen::KeyPair::generate_for(algorithm)?;
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, device.registration_id.as_str());
            let csr = params.serialize_request(&key)?.der().to_vec();
            device.csr = Some((csr, policy.to_owned()));
        }
        Ok(self)
    }
}
