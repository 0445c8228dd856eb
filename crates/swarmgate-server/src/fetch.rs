//! The services' outbound fetches (a client's `jwks_uri`), made with
//! reqwest: a 5 s timeout, no redirects (a redirect could point a fetch at
//! anything), the body read in chunks and cut off at its bound.

use std::time::Duration;

use swarmgate_service::fetch::{BoxFuture, Fetch};

pub struct HttpFetch {
    http: reqwest::Client,
}

impl HttpFetch {
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
        }
    }
}

impl Default for HttpFetch {
    fn default() -> Self {
        Self::new()
    }
}

impl Fetch for HttpFetch {
    fn get(&self, url: &str, max_bytes: usize) -> BoxFuture<'_, Result<Vec<u8>, String>> {
        let url = url.to_string();
        Box::pin(async move {
            let mut response = self
                .http
                .get(&url)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("{url} answered {}", response.status()));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
                body.extend_from_slice(&chunk);
                if body.len() > max_bytes {
                    return Err(format!("{url} sent more than {} KiB", max_bytes / 1024));
                }
            }
            Ok(body)
        })
    }
}
