use device_client::tpm::Tpm;
use dps_protocol::tpm::Public;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::swtpm::Swtpm;

/// A TPM context on its own swtpm. Field order matters: the context drops (and disconnects)
/// before the simulator is killed.
pub struct TestTpm {
    pub tpm: Tpm,
    pub swtpm: Swtpm,
}

impl TestTpm {
    pub fn new() -> Self {
        Self::on(Swtpm::start())
    }

    pub fn on(swtpm: Swtpm) -> Self {
        let tpm = Tpm::open(&swtpm.tcti()).expect("open swtpm");
        Self { tpm, swtpm }
    }

    pub fn ek(&mut self) -> Public {
        Public::from_tpm2b(&self.tpm.endorsement_key().expect("read EK")).expect("parse EK")
    }

    pub fn srk(&mut self) -> Public {
        Public::from_tpm2b(&self.tpm.storage_root_key().expect("read SRK")).expect("parse SRK")
    }
}

/// A seeded RNG; the seed is printed so a failure can be replayed.
pub fn rng(label: &str) -> ChaCha20Rng {
    let seed: u64 = rand::random();
    eprintln!("{label}: rng seed {seed}");
    ChaCha20Rng::seed_from_u64(seed)
}

impl TestTpm {
    /// Closes the context and opens a new one on the same simulator (as a reboot would).
    pub fn reopen(self) -> Self {
        let Self { tpm, swtpm } = self;
        drop(tpm);
        Self::on(swtpm)
    }
}
