//! `provisioning-service crl-sync`: keeps a broker's CRL file current. Brokers that check client
//! certificates against a CRL read it from a file (Mosquitto's `crlfile`, re-read on `SIGHUP`);
//! this fetches a credential policy's CRL from the service (`/credentialPolicies/{name}/crl`),
//! checks that the policy's issuing CA signed it and that it is not older than the one already
//! written, writes it as PEM (a new file renamed over the old, so the broker never reads half a
//! list) and signals the broker. Run beside the broker; asked once a second, a revocation
//! reaches the file within about two seconds (the service's CRL is at most a second old).
//!
//! Uses: `config` (the layers table, docs/architecture.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::config::CrlSyncArgs;

#[derive(Debug, thiserror::Error)]
pub enum CrlSyncError {
    #[error("cannot read {0}")]
    Read(String, #[source] std::io::Error),
    #[error("{0} holds no PEM certificate")]
    BadCertificate(String),
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("cannot fetch the CRL")]
    Fetch(#[source] reqwest::Error),
    #[error("the service answered {0}")]
    Status(reqwest::StatusCode),
    #[error("the answer is not a CRL")]
    NotACrl,
    #[error("the CRL is not signed by the issuing CA")]
    WrongSigner,
    #[error("the CRL is older than the one written")]
    Older,
    #[error("cannot write {0}")]
    Write(String, #[source] std::io::Error),
    #[error("cannot signal the process in {0}")]
    Signal(String, #[source] std::io::Error),
}

/// What a CRL says about its age: its number, then how many certificates it lists. Two
/// instances may sign a CRL in the same second, one before a revocation and one after; revoked
/// entries only grow within a second, so the longer one is the newer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Age {
    number: Option<u64>,
    entries: usize,
}

/// Checks `der` is a CRL signed by `issuer_der`'s key and returns its age.
fn read_crl(der: &[u8], issuer_der: &[u8]) -> Result<Age, CrlSyncError> {
    let (_, crl) = CertificateRevocationList::from_der(der).map_err(|_| CrlSyncError::NotACrl)?;
    let (_, issuer) =
        X509Certificate::from_der(issuer_der).map_err(|_| CrlSyncError::WrongSigner)?;
    if crl.issuer() != issuer.subject() {
        return Err(CrlSyncError::WrongSigner);
    }
    crl.verify_signature(issuer.public_key())
        .map_err(|_| CrlSyncError::WrongSigner)?;
    Ok(Age {
        number: crl.crl_number().and_then(|n| u64::try_from(n).ok()),
        entries: crl.iter_revoked_certificates().count(),
    })
}

/// Writes `text` to `path` through a file beside it renamed over it.
fn replace(path: &Path, text: &str) -> Result<(), CrlSyncError> {
    let write = |e| CrlSyncError::Write(path.display().to_string(), e);
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    std::fs::write(&temporary, text).map_err(write)?;
    std::fs::rename(&temporary, path).map_err(write)
}

/// Sends `SIGHUP` to the process whose id `pidfile` holds.
fn signal(pidfile: &Path) -> Result<(), CrlSyncError> {
    let fail = |e| CrlSyncError::Signal(pidfile.display().to_string(), e);
    let text = std::fs::read_to_string(pidfile).map_err(fail)?;
    let pid = text
        .trim()
        .parse::<i32>()
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| fail(std::io::ErrorKind::InvalidData.into()))?;
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).map_err(|e| fail(e.into()))
}

struct Syncer {
    http: reqwest::Client,
    issuer: Vec<u8>,
    written: Option<(Age, Vec<u8>)>,
}

impl Syncer {
    fn new(args: &CrlSyncArgs) -> Result<Self, CrlSyncError> {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| CrlSyncError::Read(p.display().to_string(), e))
        };
        let issuer = rustls_pemfile::certs(&mut &*read(&args.issuer_file)?)
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| CrlSyncError::BadCertificate(args.issuer_file.display().to_string()))?
            .to_vec();
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &args.ca_file {
            for cert in reqwest::Certificate::from_pem_bundle(&read(ca)?)
                .map_err(|_| CrlSyncError::BadCertificate(ca.display().to_string()))?
            {
                http = http.add_root_certificate(cert);
            }
        }
        // The file already there counts as written, so a restart neither rewrites nor rolls
        // it back.
        let written = std::fs::read(&args.out).ok().and_then(|text| {
            let der = rustls_pemfile::read_one_from_slice(&text).ok()??.0;
            let rustls_pemfile::Item::Crl(der) = der else {
                return None;
            };
            Some((read_crl(&der, &issuer).ok()?, der.to_vec()))
        });
        Ok(Self {
            http: http.build().map_err(CrlSyncError::Client)?,
            issuer,
            written,
        })
    }

    /// Fetches the CRL once; writes it and signals when it changed. True when it was written.
    async fn once(&mut self, args: &CrlSyncArgs) -> Result<bool, CrlSyncError> {
        let answer = self
            .http
            .get(&args.url)
            .send()
            .await
            .map_err(CrlSyncError::Fetch)?;
        if !answer.status().is_success() {
            return Err(CrlSyncError::Status(answer.status()));
        }
        let der = answer.bytes().await.map_err(CrlSyncError::Fetch)?.to_vec();
        let age = read_crl(&der, &self.issuer)?;
        match &self.written {
            Some((_, written)) if *written == der => return Ok(false),
            Some((written, _)) if age <= *written => return Err(CrlSyncError::Older),
            _ => {}
        }
        replace(
            &args.out,
            &dps_protocol::ek_cert::pem_block("X509 CRL", &der),
        )?;
        self.written = Some((age, der));
        if let Some(pidfile) = &args.reload_pidfile {
            signal(pidfile)?;
        }
        Ok(true)
    }
}

/// Runs until stopped (or once, with `--once`). A failed fetch is logged and retried at the next
/// interval; the file keeps the last good CRL.
pub async fn run(args: &CrlSyncArgs) -> Result<(), CrlSyncError> {
    let mut syncer = Syncer::new(args)?;
    if args.once {
        syncer.once(args).await?;
        return Ok(());
    }
    let mut ticks = tokio::time::interval(Duration::from_millis(args.interval_ms.max(100)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match syncer.once(args).await {
            Ok(true) => tracing::info!(file = %args.out.display(), "CRL written"),
            Ok(false) | Err(CrlSyncError::Older) => {}
            Err(e) => tracing::warn!(error = %e, "CRL not updated"),
        }
    }
}
