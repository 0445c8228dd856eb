//! One way to page through every list: keyset pagination. A page ends with
//! the key of its last item; the next page starts after it. The key is
//! opaque to callers (the HTTP layer wraps it in a `next_cursor`), so any
//! list can change what its key holds without changing its contract.

use crate::error::{Error, Result};

/// The most items one page may hold.
pub const MAX_PAGE: i64 = 200;

/// Which page to read.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// The key the previous page ended with.
    pub after: Option<String>,
    /// Items asked for; the list's default when absent.
    pub limit: Option<i64>,
}

impl PageRequest {
    pub fn first(limit: i64) -> Self {
        Self {
            after: None,
            limit: Some(limit),
        }
    }

    /// The page size, within 1 and [`MAX_PAGE`].
    pub(crate) fn size(&self, default: i64) -> i64 {
        self.limit.unwrap_or(default).clamp(1, MAX_PAGE)
    }

    /// The key a page of `(AT, ID)`-ordered items continues after.
    pub(crate) fn after_at_id(&self) -> Result<Option<(i64, &str)>> {
        self.after.as_deref().map(parse_at_id).transpose()
    }
}

/// One page of a list, and the key to continue after when more follow.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// A page of rows fetched as `size + 1` (the extra one only says more
    /// follow), continuing after the key of its last item.
    pub(crate) fn of(mut rows: Vec<T>, size: i64, key: impl Fn(&T) -> String) -> Self {
        let size = usize::try_from(size).unwrap_or(0);
        let more = rows.len() > size;
        rows.truncate(size);
        let next = if more { rows.last().map(key) } else { None };
        Self { items: rows, next }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

/// The key of an item ordered by a time and then an id.
pub(crate) fn at_id(at: i64, id: &str) -> String {
    format!("{at}.{id}")
}

fn parse_at_id(key: &str) -> Result<(i64, &str)> {
    key.split_once('.')
        .and_then(|(at, id)| Some((at.parse().ok()?, id)))
        .filter(|(_, id)| !id.is_empty())
        .ok_or_else(not_ours)
}

/// A cursor this server did not issue.
pub(crate) fn not_ours() -> Error {
    Error::BadRequest("cursor is not one this server issued".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_continues_after_its_last_item() {
        let page = Page::of(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(page.next.as_deref(), Some("2"));
        let last = Page::of(vec![1, 2], 2, |n| n.to_string());
        assert_eq!(last.next, None);
    }

    #[test]
    fn time_and_id_keys_round_trip() {
        let request = PageRequest {
            after: Some(at_id(17, "a.b")),
            limit: None,
        };
        assert_eq!(request.after_at_id().unwrap(), Some((17, "a.b")));
        for bad in ["", "x.y", "5.", "nodot"] {
            let request = PageRequest {
                after: Some(bad.into()),
                limit: None,
            };
            assert!(request.after_at_id().is_err(), "{bad:?}");
        }
        assert_eq!(PageRequest::first(500).size(50), MAX_PAGE);
    }
}
