//! The one admission check of a device, shared by the challenge and the SAS step.

use super::Refusal;
use crate::enrollment::ProvisioningStatus;
use crate::store::enrollments::EnrollmentRow;

/// A device is admitted when its registration id is enrolled, with this EK, and enabled.
pub fn admit<'a>(
    enrollment: Option<&'a EnrollmentRow>,
    ek_hash: &[u8],
) -> Result<&'a EnrollmentRow, Refusal> {
    let enrollment = enrollment.ok_or(Refusal::NotEnrolled)?;
    if enrollment.ek_hash != ek_hash {
        return Err(Refusal::EkMismatch);
    }
    match enrollment.provisioning_status {
        ProvisioningStatus::Enabled => Ok(enrollment),
        ProvisioningStatus::Disabled => Err(Refusal::Disabled),
    }
}
