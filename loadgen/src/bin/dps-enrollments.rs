//! `dps-enrollments N [PREFIX]`: writes a bulk-enroll CSV of N synthetic enrollments to stdout
//! (the header line, then `PREFIX-0000000,<EK>` ...), for measuring bulk imports. Each EK is
//! the TCG default RSA-2048 EK template around a made-up modulus that encodes the line number:
//! valid for the enrollment checks, useless to any TPM.

use std::io::Write as _;

use anyhow::Context as _;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use dps_protocol::tpm::templates::ek_rsa2048;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let count: u64 = args
        .next()
        .context("usage: dps-enrollments N [PREFIX]")?
        .parse()
        .context("N is a number")?;
    let prefix = args.next().unwrap_or_else(|| "bulk".to_owned());
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(out, "registrationId,endorsementKey")?;
    let mut modulus = vec![0xa5u8; 256];
    modulus[0] = 0xc3;
    for i in 0..count {
        modulus[240..248].copy_from_slice(&i.to_be_bytes());
        let ek = ek_rsa2048(modulus.clone()).to_tpm2b();
        writeln!(out, "{prefix}-{i:07},{}", STANDARD.encode(ek))?;
    }
    out.flush()?;
    Ok(())
}
