//! Every SQL statement of the service. Runtime-checked queries (`query_as` + `FromRow`), so the
//! build needs no database; each function is covered by the integration tests.

pub mod enrollments;
pub mod registrations;
pub mod throttle;

/// What a store call can fail with, beyond the database itself.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("etag does not match")]
    PreconditionFailed,
    #[error("{0}")]
    Conflict(&'static str),
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

/// Whether `err` is a unique violation of `constraint`.
pub(crate) fn is_unique_violation(err: &sqlx::Error, constraint: &str) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if db.code().as_deref() == Some("23505") && db.constraint() == Some(constraint))
}
