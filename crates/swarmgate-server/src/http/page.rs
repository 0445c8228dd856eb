//! One cursor format for every list: `{"items": [...], "next_cursor"}`,
//! the cursor the base64url text of the key the page ended with, read
//! back from `?cursor=` with `?limit=`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use swarmgate_service::page::{Page, PageRequest};
use swarmgate_service::Error;

/// `?limit=&cursor=` of a list.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The page asked for; a cursor this server did not issue is a 400.
    pub fn request(&self) -> Result<PageRequest, Error> {
        let not_ours = || Error::BadRequest("cursor is not one this server issued".into());
        let after = self
            .cursor
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(|c| {
                URL_SAFE_NO_PAD
                    .decode(c)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(not_ours)
            })
            .transpose()?;
        Ok(PageRequest {
            after,
            limit: self.limit,
        })
    }
}

/// A list body.
#[derive(Debug, Serialize)]
pub struct ListBody<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> ListBody<T> {
    pub fn of<D>(page: Page<D>, body: impl FnMut(D) -> T) -> Self {
        Self {
            next_cursor: page.next.as_deref().map(|key| URL_SAFE_NO_PAD.encode(key)),
            items: page.items.into_iter().map(body).collect(),
        }
    }
}
