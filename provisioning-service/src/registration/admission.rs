//! The one admission check of a device, shared by the challenge and the SAS step.

use sqlx::PgConnection;

use super::{Refusal, StepError};
use crate::enrollment::ProvisioningStatus;
use crate::store::device_steps::Admission;
use crate::store::enrollments;

/// A device is admitted when its registration id is enrolled (`enrollment`, read by the step's
/// own statement), with this EK, and enabled. `conn` is used only to explain a refusal.
pub async fn admit(
    conn: &mut PgConnection,
    enrollment: Option<Admission>,
    ek_hash: &[u8],
) -> Result<Admission, StepError> {
    let Some(enrollment) = enrollment else {
        // Only on the refusal path: tell the operator's log why, when the TPM is enrolled but
        // under another id (a device configured with the wrong registration id).
        return Err(match enrollments::get_by_ek_hash(conn, ek_hash).await? {
            Some(_) => Refusal::EnrolledUnderAnotherId,
            None => Refusal::NotEnrolled,
        }
        .into());
    };
    if enrollment.ek_hash != ek_hash {
        return Err(Refusal::EkMismatch.into());
    }
    match enrollment.provisioning_status {
        ProvisioningStatus::Enabled => Ok(enrollment),
        ProvisioningStatus::Disabled => Err(Refusal::Disabled.into()),
    }
}
