//! One cursor format for every list: `{"items": [...], "next_cursor"}`,
//! the cursor the base64url text of `1:` and the key the page ended with
//! (so even an empty key, a usage group without a key, makes a cursor),
//! read back from `?cursor=` with `?limit=`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use swarmgate_service::page::{Page, PageRequest};
use swarmgate_service::Error;

/// What every cursor's text starts with.
const VERSION: &str = "1:";

/// `?limit=&cursor=` of a list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// How many items at most (default 50 or 100, at most 200).
    pub limit: Option<i64>,
    /// The `next_cursor` of the page before.
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
                    .and_then(|text| text.strip_prefix(VERSION).map(str::to_string))
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
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListBody<T> {
    pub items: Vec<T>,
    /// `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> ListBody<T> {
    pub fn of<D>(page: Page<D>, body: impl FnMut(D) -> T) -> Self {
        Self {
            next_cursor: page
                .next
                .as_deref()
                .map(|key| URL_SAFE_NO_PAD.encode(format!("{VERSION}{key}"))),
            items: page.items.into_iter().map(body).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_makes_a_cursor_that_reads_back() {
        for key in ["", "alice", "17.abc", "grüße"] {
            let page = Page {
                items: vec![()],
                next: Some(key.to_string()),
            };
            let cursor = ListBody::of(page, |()| ()).next_cursor.unwrap();
            assert!(!cursor.is_empty());
            let query = PageQuery {
                limit: None,
                cursor: Some(cursor),
            };
            assert_eq!(query.request().unwrap().after.as_deref(), Some(key));
        }
        let foreign = PageQuery {
            limit: None,
            cursor: Some(URL_SAFE_NO_PAD.encode("alice")),
        };
        assert!(foreign.request().is_err());
    }
}
