//! A TPM context on its own swtpm, recorded or freshly manufactured.

use std::path::PathBuf;

use device_client::tpm::{EkType, Tpm};
use dps_protocol::tpm::Public;

use crate::swtpm::Swtpm;

/// The committed, manufactured swtpm state (EK and SRK persisted): every run sees the same
/// TPM, which the recorded vectors were computed on.
#[must_use]
pub fn fixture_state() -> PathBuf {
    crate::workspace_root().join("test-support/fixtures/swtpm-state")
}

/// A TPM context and its simulator. Field order matters: the context drops (and disconnects)
/// before the simulator is killed.
pub struct TestTpm {
    pub tpm: Tpm,
    pub swtpm: Swtpm,
}

impl TestTpm {
    /// The recorded TPM (fast: no manufacturing).
    #[must_use]
    pub fn recorded() -> Self {
        Self::on(Swtpm::start_from_state(&fixture_state()))
    }

    /// A newly manufactured TPM (another device).
    #[must_use]
    pub fn fresh() -> Self {
        Self::on(Swtpm::start())
    }

    #[must_use]
    pub fn on(swtpm: Swtpm) -> Self {
        let tpm = Tpm::open(&swtpm.tcti()).expect("open swtpm");
        Self { tpm, swtpm }
    }

    /// This TPM, using its EK of `ek_type` (at that type's default handle).
    #[must_use]
    pub fn using_ek(mut self, ek_type: EkType) -> Self {
        self.tpm.use_ek_type(ek_type).expect("use the EK type");
        self
    }

    /// Closes the context and opens a new one on the same simulator (as a reboot would).
    #[must_use]
    pub fn reopen(self) -> Self {
        let Self { tpm, swtpm } = self;
        drop(tpm);
        Self::on(swtpm)
    }

    pub fn ek(&mut self) -> Public {
        Public::from_tpm2b(&self.tpm.endorsement_key().expect("read EK")).expect("parse EK")
    }

    pub fn srk(&mut self) -> Public {
        Public::from_tpm2b(&self.tpm.storage_root_key().expect("read SRK")).expect("parse SRK")
    }
}
