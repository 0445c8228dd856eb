use thiserror::Error;

/// Everything the store can report. The message of `Unavailable` and
/// `Database` is for logs and health checks; the HTTP layer never puts SQL
/// text in a response body.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{field} is already taken")]
    Conflict { field: &'static str },
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Config(String),
    /// The database refused a value as data (PostgreSQL class 22, such as a
    /// NUL byte in text): bad input, not an outage or a bug.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
            sqlx::Error::Database(db)
                if db
                    .code()
                    .is_some_and(|c| c.len() == 5 && c.starts_with("22")) =>
            {
                StoreError::InvalidInput(db.message().to_string())
            }
            sqlx::Error::Database(db) if is_outage(db.as_ref()) => {
                StoreError::Unavailable(db.to_string())
            }
            other => StoreError::Database(other.to_string()),
        }
    }
}

/// Errors that mean "the database cannot serve us right now" rather than
/// "this query is wrong": they become 503, not 500.
fn is_outage(db: &dyn sqlx::error::DatabaseError) -> bool {
    let Some(code) = db.code() else {
        return false;
    };
    let code = code.as_ref();
    // PostgreSQL SQLSTATE classes: 08 connection exception, 53 insufficient
    // resources, 57 operator intervention (shutdown, terminated backend),
    // 58 system error; 3D000 database missing; 28 authorization; 55000 for
    // "database does not allow connections".
    if code.len() == 5 && code.is_ascii() {
        return ["08", "53", "57", "58", "28"].contains(&&code[..2])
            || code == "3D000"
            || (code == "55000" && db.message().contains("connections"));
    }
    // SQLite primary result codes (the low byte of the extended code):
    // BUSY 5, LOCKED 6, READONLY 8, IOERR 10, CORRUPT 11, FULL 13,
    // CANTOPEN 14, NOTADB 26.
    code.parse::<i64>()
        .is_ok_and(|c| [5, 6, 8, 10, 11, 13, 14, 26].contains(&(c & 0xff)))
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        match e {
            sqlx::migrate::MigrateError::Execute(inner) => inner.into(),
            other => StoreError::Database(format!("migration failed: {other}")),
        }
    }
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}
