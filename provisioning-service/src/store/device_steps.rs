//! The device steps' statements: each is one round trip, and a step is at most two of them with
//! the service's own work (RSA, HMAC) before or between them. A complete registration
//! (challenge, SAS registration answered with its decision) costs Postgres two statements on
//! the instance that issued the challenge and three on another, instead of thirteen in eight
//! transactions (docs/architecture.md, decision 2).
//!
//! A step's read and its write are separate statements, not one transaction held across the
//! service's work: the write re-checks, in the same statement, everything the read decided on
//! (the proven challenge still exists, the registration's etag is unchanged, the enrollment
//! still admits this EK; after a remembered read, the etags of everything read), and writes
//! nothing if any of it changed. The caller then reads again. Each statement takes its rows in
//! the store's lock order.

use dps_protocol::wire::AttestationRecord;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::registrations::Previous;
use super::registrations::{
    ChallengeRow, IssuedRecord, RegistrationRow, Status, CHALLENGES_PER_ADDRESS,
    CHALLENGES_PER_REGISTRATION,
};
use super::throttle::Limit;
use super::throttle::{self, Counted};
use super::ProvisioningStatus;
use super::StoreError;

/// What admission needs of an enrollment, read beside a step's other rows. `SELECT`ed under the
/// column names of [`ADMISSION_COLUMNS`] from an `enrollments e` that may be missing.
#[derive(Debug, Clone)]
pub struct Admission {
    pub ek_hash: Vec<u8>,
    pub provisioning_status: ProvisioningStatus,
    pub device_id: Option<String>,
    pub iot_hub_host_name: Option<String>,
    /// The enrollment's other DPS fields (allocation, re-provisioning, initial twin).
    pub extra: Value,
    /// The enrollment's etag and its group's, as read: a write on a remembered read checks
    /// them unchanged ([`Observed`]).
    pub etag: Uuid,
    pub group_etag: Option<Uuid>,
}

/// The enrollment's columns in a joined read (`enrollments e` and its group `g`, both
/// possibly missing), named apart from the other table's. A device that joined a group takes
/// its allocation from the group and is disabled with it.
const ADMISSION_COLUMNS: &str =
    "e.ek_hash AS enrolled_ek_hash,
     CASE WHEN g.provisioning_status = 'disabled' THEN 'disabled'
          ELSE e.provisioning_status END AS enrolled_status,
     e.device_id AS enrolled_device_id,
     CASE WHEN e.group_id IS NULL THEN e.iot_hub_host_name ELSE g.iot_hub_host_name END AS enrolled_hub,
     CASE WHEN e.group_id IS NULL THEN e.extra ELSE g.extra END AS enrolled_extra,
     e.etag AS enrolled_etag, g.etag AS enrolled_group_etag";

/// The enrollment of registration id `$N` and its group, joined as [`ADMISSION_COLUMNS`] reads.
macro_rules! enrollment_join {
    ($n:literal) => {
        concat!(
            "LEFT JOIN enrollments e ON e.registration_id = $",
            $n,
            " LEFT JOIN enrollment_groups g ON g.group_id = e.group_id"
        )
    };
}

impl Admission {
    /// `None` when the joined enrollment is missing.
    fn from_joined(row: &PgRow) -> sqlx::Result<Option<Self>> {
        let Some(ek_hash) = row.try_get::<Option<Vec<u8>>, _>("enrolled_ek_hash")? else {
            return Ok(None);
        };
        Ok(Some(Self {
            ek_hash,
            provisioning_status: row.try_get("enrolled_status")?,
            device_id: row.try_get("enrolled_device_id")?,
            iot_hub_host_name: row.try_get("enrolled_hub")?,
            extra: row.try_get::<Json<Value>, _>("enrolled_extra")?.0,
            etag: row.try_get("enrolled_etag")?,
            group_etag: row.try_get("enrolled_group_etag")?,
        }))
    }
}

/// The device's current assignment, from a registration's `status`, `assigned_hub`,
/// `device_id` and `initial_twin` columns (null when it has none).
fn previous_from(row: &PgRow) -> sqlx::Result<Option<Previous>> {
    if row.try_get::<Option<Status>, _>("status")? != Some(Status::Assigned) {
        return Ok(None);
    }
    row.try_get::<Option<String>, _>("assigned_hub")?
        .map(|hub| {
            Ok(Previous {
                hub,
                device_id: row.try_get("device_id")?,
                initial_twin: row
                    .try_get::<Option<Json<Value>>, _>("initial_twin")?
                    .map(|t| t.0),
            })
        })
        .transpose()
}

/// The attestation record in column `column` of a read row (null when none).
fn attested_from(row: &PgRow, column: &str) -> sqlx::Result<Option<AttestationRecord>> {
    Ok(row
        .try_get::<Option<Json<AttestationRecord>>, _>(column)?
        .map(|r| r.0))
}

/// What a step's decision rested on, as read: the enrollment's and its group's etags and the
/// registration's (`None`: there was none). A step that decides on a read made earlier (a
/// challenge this instance remembers, `registration::recent`) has [`assign`] write only if all
/// three are still so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub enrollment_etag: Uuid,
    pub group_etag: Option<Uuid>,
    pub registration_etag: Option<Uuid>,
}

/// The challenge step's statement: the asking address's throttle count, the enrollment of the
/// registration id and the device's registration, and whether the challenge offered with it was
/// recorded.
#[derive(Debug)]
pub struct ChallengeGate {
    pub counted: Counted,
    pub enrollment: Option<Admission>,
    /// The device's current assignment, if it has one.
    pub previous: Option<Previous>,
    /// The registration's etag, if the device has a registration.
    pub registration_etag: Option<Uuid>,
    /// What the registration recorded of its attestation.
    pub attested: Option<AttestationRecord>,
    /// The offered challenge was recorded ([`put_challenge`]): the address was within its limit
    /// and the enrollment admits the challenge's EK.
    pub put: bool,
}

/// Counts one challenge in `bucket` and reads the enrollment and the registration of
/// `registration_id`, in one statement. Every request is counted, admitted or not, so probing
/// for enrolled ids spends the prober's budget.
///
/// With `offered`, the same statement also records that challenge as [`put_challenge`] does,
/// when the count is within `limit` and the individual enrollment is enabled with the
/// challenge's EK: the rule of `registration::admit`, written again here so that an admitted
/// challenge costs one round trip instead of two. The caller still judges from the returned
/// rows and records the challenge itself when this statement did not (a group's device), so
/// this condition only has to be no looser than the caller's; the refusal tests check that.
pub async fn challenge_gate(
    conn: &mut PgConnection,
    registration_id: &str,
    bucket: &str,
    limit: Limit,
    now: OffsetDateTime,
    offered: Option<&ChallengeRow>,
) -> Result<ChallengeGate, StoreError> {
    let gate = format!(
        "WITH hit AS ({}), gate AS (
             SELECT hit.count, hit.window_start, {ADMISSION_COLUMNS}, r.etag AS registered_etag,
                    r.status, r.assigned_hub, r.device_id, r.initial_twin,
                    r.attestation AS registered_attestation
             FROM hit {} LEFT JOIN registrations r ON r.registration_id = $4)",
        throttle::hit_cte!("SELECT $1, $2::timestamptz, 1", "$3"),
        enrollment_join!("4")
    );
    // `put_challenge` returns void, which is not null: `put` is true once it ran.
    let sql = match offered {
        None => format!("{gate} SELECT * FROM gate"),
        Some(_) => format!(
            "{gate} SELECT gate.*,
                 CASE WHEN gate.count <= $5::bigint AND gate.enrolled_ek_hash = $8
                           AND gate.enrolled_status = 'enabled'
                      THEN put_challenge($6, $4, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                                          $18, $19)
                           IS NOT NULL
                      ELSE false END AS put
             FROM gate"
        ),
    };
    let row = sqlx::query(&sql)
        .bind(bucket)
        .bind(now)
        .bind(throttle::window_secs(limit))
        .bind(registration_id);
    let row = match offered {
        None => row,
        Some(c) => bind_challenge(row.bind(i64::from(limit.count)), c),
    }
    .fetch_one(conn)
    .await?;
    Ok(ChallengeGate {
        counted: Counted::from_row(&row)?,
        enrollment: Admission::from_joined(&row)?,
        previous: previous_from(&row)?,
        registration_etag: row.try_get("registered_etag")?,
        attested: attested_from(&row, "registered_attestation")?,
        put: offered.is_some() && row.try_get("put")?,
    })
}

/// Binds `put_challenge`'s arguments after the registration id: the challenge's other columns
/// and the caps.
fn bind_challenge<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    c: &'q ChallengeRow,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(c.challenge_id)
        .bind(&c.client_address)
        .bind(&c.ek_hash)
        .bind(&c.storage_root_key)
        .bind(&c.sealed_key)
        .bind(&c.key_id)
        .bind(&c.authentication_key)
        .bind(c.issued_at)
        .bind(c.expires_at)
        .bind(CHALLENGES_PER_ADDRESS)
        .bind(CHALLENGES_PER_REGISTRATION)
        .bind(&c.group_id)
        .bind(&c.attestation_key)
        .bind(&c.attestation_nonce_hash)
}

/// Records a new challenge beside the live ones and drops the oldest beyond
/// [`CHALLENGES_PER_ADDRESS`] for its client address and [`CHALLENGES_PER_REGISTRATION`] in
/// all, and any expired one of the registration. One call of `put_challenge` (migrations 0011
/// and 0012), which locks the registration's challenges first, so that challenges written at
/// the same moment count one another. For a challenge [`challenge_gate`] did not record.
pub async fn put_challenge(conn: &mut PgConnection, c: &ChallengeRow) -> Result<(), StoreError> {
    bind_challenge(
        sqlx::query(
            "SELECT put_challenge($2, $1, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
            .bind(&c.registration_id),
        c,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Where a key that may verify a device's SAS token comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// A live challenge, by id.
    Challenge(Uuid),
    /// The registration state, at this etag.
    Registration { etag: Uuid },
}

/// A key that may verify a device's SAS token, and the TPM it was issued to.
#[derive(Debug, Clone)]
pub struct KeyCandidate {
    pub source: KeySource,
    pub sealed_key: Vec<u8>,
    pub key_id: String,
    pub ek_hash: Vec<u8>,
    pub storage_root_key: Vec<u8>,
    pub authentication_key: Vec<u8>,
    /// For a challenge: the group that admitted the device (it has no enrollment yet).
    pub group_id: Option<String>,
    /// For a challenge: the attestation key shown with it and its nonce's hash.
    pub attestation_key: Option<Vec<u8>>,
    pub attestation_nonce_hash: Option<Vec<u8>>,
}

/// The SAS step's read: the device's key candidates, and its enrollment.
#[derive(Debug, Default)]
pub struct RegisterView {
    /// Live challenges newest first, then the registration's key.
    pub candidates: Vec<KeyCandidate>,
    /// `None` if not enrolled (or no candidate: then nothing else matters).
    pub enrollment: Option<Admission>,
    /// The device's current assignment, if it has one.
    pub previous: Option<Previous>,
    /// Set when this view was remembered rather than read just now: what it rested on.
    pub observed: Option<Observed>,
    /// The operation of an allocation webhook's decision under way for the registration's
    /// key (`assigning`, not yet overdue).
    pub deciding: Option<Uuid>,
    /// What the device's registration recorded of its attestation (pinned values among it).
    pub attested: Option<AttestationRecord>,
}

/// The SAS step's first statement: every key the token may have been signed with, and the
/// enrollment, in one read.
pub async fn register_view(
    conn: &mut PgConnection,
    registration_id: &str,
    now: OffsetDateTime,
) -> Result<RegisterView, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT k.*, {ADMISSION_COLUMNS} FROM (
             SELECT 0 AS rank, challenge_id AS id, sealed_key, key_id, ek_hash, storage_root_key,
                    authentication_key, NULL::text AS status, NULL::text AS assigned_hub,
                    NULL::text AS device_id, NULL::jsonb AS initial_twin, group_id,
                    issued_at AS at, NULL::uuid AS deciding, attestation_key,
                    attestation_nonce_hash, NULL::jsonb AS attestation
             FROM challenges WHERE registration_id = $1 AND expires_at > $2
             UNION ALL
             SELECT 1, etag, sealed_key, key_id, ek_hash, storage_root_key, authentication_key,
                    status, assigned_hub, device_id, initial_twin, NULL, updated_at,
                    CASE WHEN status = 'assigning' AND decide_by > $2 THEN operation_id END,
                    NULL, NULL, attestation
             FROM registrations WHERE registration_id = $1
         ) k {}
         ORDER BY k.rank, k.at DESC, k.id",
        enrollment_join!("1")
    ))
    .bind(registration_id)
    .bind(now)
    .fetch_all(conn)
    .await?;
    let mut view = RegisterView::default();
    for row in &rows {
        let id: Uuid = row.try_get("id")?;
        let rank: i32 = row.try_get("rank")?;
        view.candidates.push(KeyCandidate {
            source: if rank == 0 {
                KeySource::Challenge(id)
            } else {
                KeySource::Registration { etag: id }
            },
            sealed_key: row.try_get("sealed_key")?,
            key_id: row.try_get("key_id")?,
            ek_hash: row.try_get("ek_hash")?,
            storage_root_key: row.try_get("storage_root_key")?,
            authentication_key: row.try_get("authentication_key")?,
            group_id: row.try_get("group_id")?,
            attestation_key: row.try_get("attestation_key")?,
            attestation_nonce_hash: row.try_get("attestation_nonce_hash")?,
        });
        if rank == 1 {
            view.previous = previous_from(row)?;
            view.deciding = row.try_get("deciding")?;
            view.attested = attested_from(row, "attestation")?;
        }
        if view.enrollment.is_none() {
            view.enrollment = Admission::from_joined(row)?;
        }
    }
    Ok(view)
}

/// The enrollment still admits the key's EK: the guard of both SAS-step writes ($1 the
/// registration id, $7 the EK hash).
const ADMITTED: &str = "admitted AS (
    SELECT 1 FROM enrollments
    WHERE registration_id = $1 AND ek_hash = $7 AND provisioning_status = 'enabled'
      AND NOT EXISTS (SELECT 1 FROM enrollment_groups g
                      WHERE g.group_id = enrollments.group_id AND g.provisioning_status = 'disabled'))";

/// With [`Observed`]: the enrollment, its group and the registration are still at the etags
/// observed ($23, $24, $25).
const UNCHANGED: &str = ",
    unchanged AS (
        SELECT 1 WHERE (SELECT etag FROM enrollments WHERE registration_id = $1) = $23::uuid
          AND (SELECT g.etag FROM enrollments e JOIN enrollment_groups g ON g.group_id = e.group_id
               WHERE e.registration_id = $1) IS NOT DISTINCT FROM $24::uuid
          AND (SELECT etag FROM registrations WHERE registration_id = $1) IS NOT DISTINCT FROM $25::uuid)";

/// With an issued certificate ($22, an [`IssuedRecord`] as JSON): recorded, and the
/// registration's earlier live certificates revoked, if `$written` wrote the registration.
fn issued_cte(written: &str) -> String {
    format!(
        ",
     issued AS (
         INSERT INTO issued_certificates (serial, registration_id, credential_policy, fingerprint,
                                          not_before, not_after, issued_at)
         SELECT decode($22->>'serial', 'hex'), $1, $22->>'credential_policy',
                decode($22->>'fingerprint', 'hex'), ($22->>'not_before')::timestamptz,
                ($22->>'not_after')::timestamptz, $15
         WHERE $22::jsonb IS NOT NULL AND EXISTS (SELECT 1 FROM {written})),
     superseded AS (
         UPDATE issued_certificates SET revoked_at = $15
         WHERE registration_id = $1 AND revoked_at IS NULL AND $22::jsonb IS NOT NULL
           AND serial <> decode($22->>'serial', 'hex') AND EXISTS (SELECT 1 FROM {written}))"
    )
}

/// The SAS step's second statement: writes the registration state `r` if nothing the read
/// decided on changed since. With a challenge's key, that challenge is consumed if it is still
/// live (and the device's other challenges with it) and the state created or replaced; with the
/// registration's key, the state is replaced only at the etag it was read at. With `observed`
/// (a challenge's key, the decision made on a remembered read), only if the enrollment, its
/// group and the registration are as observed too. `None`: something changed, nothing was
/// written.
pub async fn assign(
    conn: &mut PgConnection,
    r: &RegistrationRow,
    proven_by: KeySource,
    observed: Option<&Observed>,
    issued: Option<&IssuedRecord>,
) -> Result<Option<RegistrationRow>, StoreError> {
    // Only a challenge's write checks observed etags: a remembered view holds challenges only.
    let observed = match proven_by {
        KeySource::Challenge(_) => observed,
        KeySource::Registration { .. } => None,
    };
    let (unchanged, still) = match observed {
        Some(_) => (UNCHANGED, " AND EXISTS (SELECT 1 FROM unchanged)"),
        None => ("", ""),
    };
    let sql = match proven_by {
        KeySource::Challenge(_) => format!(
            "WITH {ADMITTED}{unchanged},
             proven AS (
                 DELETE FROM challenges
                 WHERE challenge_id = $16 AND registration_id = $1 AND expires_at > $15
                   AND EXISTS (SELECT 1 FROM admitted){still}
                 RETURNING challenge_id),
             others AS (
                 DELETE FROM challenges
                 WHERE registration_id = $1 AND challenge_id <> $16 AND EXISTS (SELECT 1 FROM proven)){issued}
             INSERT INTO registrations (registration_id, operation_id, status, substatus, assigned_hub, device_id,
                                        ek_hash, storage_root_key, sealed_key, key_id, authentication_key,
                                        error_code, error_message, etag, created_at, updated_at,
                                        payload, initial_twin, decide_by, attestation, certificate_chain)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15, $17, $18, $19,
                    $20, $21
             WHERE EXISTS (SELECT 1 FROM proven)
             ON CONFLICT (registration_id) DO UPDATE SET
                 operation_id = EXCLUDED.operation_id, status = EXCLUDED.status, substatus = EXCLUDED.substatus,
                 assigned_hub = EXCLUDED.assigned_hub, device_id = EXCLUDED.device_id, ek_hash = EXCLUDED.ek_hash,
                 storage_root_key = EXCLUDED.storage_root_key, sealed_key = EXCLUDED.sealed_key,
                 key_id = EXCLUDED.key_id, authentication_key = EXCLUDED.authentication_key,
                 error_code = EXCLUDED.error_code, error_message = EXCLUDED.error_message,
                 etag = EXCLUDED.etag, updated_at = EXCLUDED.updated_at, payload = EXCLUDED.payload,
                 initial_twin = EXCLUDED.initial_twin, decide_by = EXCLUDED.decide_by,
                 attestation = EXCLUDED.attestation, certificate_chain = EXCLUDED.certificate_chain
             RETURNING *",
            issued = issued_cte("proven")
        ),
        // The registration is read back as it is written; the certificate CTEs ask whether the
        // guarded row exists (a data-modifying CTE cannot see another's rows).
        KeySource::Registration { .. } => format!(
            "WITH {ADMITTED},
             current AS (
                 SELECT 1 FROM registrations
                 WHERE registration_id = $1 AND etag = $16 AND EXISTS (SELECT 1 FROM admitted)){issued}
             UPDATE registrations SET
                 operation_id = $2, status = $3, substatus = $4, assigned_hub = $5, device_id = $6,
                 ek_hash = $7, storage_root_key = $8, sealed_key = $9, key_id = $10,
                 authentication_key = $11, error_code = $12, error_message = $13, etag = $14,
                 updated_at = $15, payload = $17, initial_twin = $18, decide_by = $19,
                 attestation = $20, certificate_chain = $21
             WHERE registration_id = $1 AND etag = $16 AND EXISTS (SELECT 1 FROM admitted)
             RETURNING *",
            issued = issued_cte("current")
        ),
    };
    let guard = match proven_by {
        KeySource::Challenge(id) => id,
        KeySource::Registration { etag } => etag,
    };
    let query = sqlx::query_as(&sql)
        .bind(&r.registration_id)
        .bind(r.operation_id)
        .bind(r.status)
        .bind(r.substatus)
        .bind(&r.assigned_hub)
        .bind(&r.device_id)
        .bind(&r.ek_hash)
        .bind(&r.storage_root_key)
        .bind(&r.sealed_key)
        .bind(&r.key_id)
        .bind(&r.authentication_key)
        .bind(r.error_code)
        .bind(&r.error_message)
        .bind(r.etag)
        .bind(r.updated_at)
        .bind(guard)
        .bind(&r.payload)
        .bind(&r.initial_twin)
        .bind(r.decide_by)
        .bind(&r.attestation)
        .bind(&r.certificate_chain)
        .bind(issued.map(Json));
    let query = match observed {
        Some(o) => query
            .bind(o.enrollment_etag)
            .bind(o.group_etag)
            .bind(o.registration_etag),
        None => query,
    };
    query.fetch_optional(conn).await.map_err(device_id_taken)
}

/// A write that would put two devices on one hub under one device id.
fn device_id_taken(e: sqlx::Error) -> StoreError {
    if super::is_unique_violation(&e, "registrations_hub_device") {
        StoreError::DeviceIdTaken
    } else {
        StoreError::Db(e)
    }
}

/// Writes the decision on an `assigning` registration (`r`'s status, substatus, hub, device
/// id, payload, twin and error; a new etag), if it is still the one written at `etag`: a
/// device that registered again meanwhile made this decision moot. `None`: nothing written.
pub async fn decide(
    conn: &mut PgConnection,
    r: &RegistrationRow,
    etag: Uuid,
) -> Result<Option<RegistrationRow>, StoreError> {
    sqlx::query_as(
        "UPDATE registrations SET
             status = $3, substatus = $4, assigned_hub = $5, device_id = $6, payload = $7,
             initial_twin = $8, error_code = $9, error_message = $10, etag = $11,
             updated_at = $12, decide_by = NULL
         WHERE registration_id = $1 AND etag = $2 AND status = 'assigning'
         RETURNING *",
    )
    .bind(&r.registration_id)
    .bind(etag)
    .bind(r.status)
    .bind(r.substatus)
    .bind(&r.assigned_hub)
    .bind(&r.device_id)
    .bind(&r.payload)
    .bind(&r.initial_twin)
    .bind(r.error_code)
    .bind(&r.error_message)
    .bind(r.etag)
    .bind(r.updated_at)
    .fetch_optional(conn)
    .await
    .map_err(device_id_taken)
}

/// A registration state read by an authenticated device call, and the call's throttle count.
#[derive(Debug, FromRow)]
pub struct Polled {
    #[sqlx(flatten)]
    pub registration: RegistrationRow,
    #[sqlx(flatten)]
    pub counted: Counted,
}

/// The poll's one statement: the registration state of `registration_id` and one hit on the
/// throttle bucket of (registration, client address), counted only if the registration exists.
/// The token is checked after this read, so the count includes refused polls; keying it by the
/// asking address as well keeps a stranger elsewhere from spending the device's budget.
pub async fn poll(
    conn: &mut PgConnection,
    registration_id: &str,
    client_address: &str,
    limit: Limit,
    now: OffsetDateTime,
) -> Result<Option<Polled>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "WITH r AS (SELECT * FROM registrations WHERE registration_id = $1),
         hit AS (",
        throttle::hit_cte!(
            "SELECT 'poll:' || r.registration_id || '@' || $2, $3::timestamptz, 1 FROM r",
            "$4"
        ),
        ") SELECT r.*, hit.count, hit.window_start FROM r CROSS JOIN hit"
    ))
    .bind(registration_id)
    .bind(client_address)
    .bind(now)
    .bind(throttle::window_secs(limit))
    .fetch_optional(conn)
    .await?)
}
