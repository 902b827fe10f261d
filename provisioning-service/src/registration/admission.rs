//! The one admission check of a device, shared by the challenge and the SAS step.

use sqlx::PgConnection;

use super::{Refusal, StepError};
use crate::enrollment::ProvisioningStatus;
use crate::store::enrollments::{self, EnrollmentRow};

/// A device is admitted when its registration id is enrolled, with this EK, and enabled. Reads
/// on the caller's connection (inside its transaction); locks nothing.
pub async fn admit(
    conn: &mut PgConnection,
    registration_id: &str,
    ek_hash: &[u8],
) -> Result<EnrollmentRow, StepError> {
    let Some(enrollment) = enrollments::get(conn, registration_id).await? else {
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
