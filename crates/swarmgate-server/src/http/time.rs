//! Times on the wire: RFC 3339 text out, RFC 3339 (or unix seconds) in.

use swarmgate_service::Error;

/// RFC 3339 text of a unix time, for JSON bodies.
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Unix seconds of an RFC 3339 time given as the query parameter `name`.
pub fn parse_rfc3339(name: &str, text: &str) -> Result<i64, Error> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| Error::BadRequest(format!("{name}: give an RFC 3339 time")))
}
