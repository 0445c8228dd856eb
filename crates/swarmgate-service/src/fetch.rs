//! Outbound fetches the services need (a client's `jwks_uri`), behind a
//! small trait the server implements with its HTTP client, so this crate
//! carries no HTTP stack of its own.

use std::future::Future;
use std::pin::Pin;

/// A boxed future, as a trait object's method can return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait Fetch: Send + Sync {
    /// The body of a `GET url` answered 2xx, at most `max_bytes` of it;
    /// an error says why in words fit for a log line.
    fn get(&self, url: &str, max_bytes: usize) -> BoxFuture<'_, Result<Vec<u8>, String>>;
}

/// Fetches nothing: for tools that never authenticate clients (the CLI).
pub struct NoFetch;

impl Fetch for NoFetch {
    fn get(&self, url: &str, _: usize) -> BoxFuture<'_, Result<Vec<u8>, String>> {
        let url = url.to_string();
        Box::pin(async move { Err(format!("{url}: fetching is off in this process")) })
    }
}
