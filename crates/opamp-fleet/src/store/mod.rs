//! Persistence behind the [`FleetStore`] trait.

/// Store errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed.
    #[error("{context}: {source}")]
    Database {
        /// What the store was doing.
        context: &'static str,
        /// The database error.
        #[source]
        source: rusqlite::Error,
    },
}
