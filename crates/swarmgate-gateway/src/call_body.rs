//! What the gateway reads of an LLM call's body, in one pass over its bytes
//! and without building a tree of it: the model, the token bounds, whether
//! it streams and asked for its usage, and the estimate of its prompt. The
//! body then goes upstream as it came, or with one field added: it is not
//! written out again.

use std::borrow::Cow;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::usage::{estimate_prompt, estimate_text, NOT_PROMPT};

/// An LLM call's body and what the gateway read of it.
#[derive(Debug, Clone, Default)]
pub struct CallBody {
    raw: Bytes,
    /// `model`, when it is a string.
    pub model: Option<String>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    /// `n` as sent (`None` when absent), checked by the worst case.
    pub n: Option<Value>,
    /// `stream: true`.
    pub stream: bool,
    /// `stream_options`, as sent.
    stream_options: Option<Value>,
    /// The upper estimate of its prompt tokens ([`estimate_prompt`]'s rule
    /// over the whole body).
    pub prompt_estimate: u64,
}

/// Why a body cannot be read as an LLM call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON at all (or JSON with trailing bytes).
    NotJson,
    /// JSON, but not an object.
    NotAnObject,
    /// A top-level field given twice: the gateway and the upstream could
    /// each take a different one (a model allowed here, another run there).
    Duplicate(String),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotJson => f.write_str("request body is not valid JSON"),
            Self::NotAnObject => f.write_str("the body must be a JSON object"),
            Self::Duplicate(field) => write!(f, "the field `{field}` is given more than once"),
        }
    }
}

impl CallBody {
    pub fn parse(raw: Bytes) -> Result<Self, BodyError> {
        if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            // Read as a tree, so that what is JSON here is what is JSON
            // everywhere else (a number beyond f64 is not).
            return Err(match serde_json::from_slice::<Value>(&raw) {
                Ok(_) => BodyError::NotAnObject,
                Err(_) => BodyError::NotJson,
            });
        }
        let mut duplicate = None;
        let mut de = serde_json::Deserializer::from_slice(&raw);
        let read = de
            .deserialize_map(TopVisitor {
                duplicate: &mut duplicate,
            })
            .and_then(|read| de.end().map(|()| read));
        // Not JSON wins over a field given twice: the body is read to its
        // end either way.
        match (read, duplicate) {
            (Err(_), _) => Err(BodyError::NotJson),
            (Ok(_), Some(field)) => Err(BodyError::Duplicate(field)),
            (Ok(read), None) => Ok(Self { raw, ..read }),
        }
    }

    /// `stream_options.include_usage: true`.
    pub fn asked_for_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.get("include_usage"))
            == Some(&Value::Bool(true))
    }

    /// The body as received.
    pub fn bytes(&self) -> &Bytes {
        &self.raw
    }

    /// The body with `stream_options.include_usage` set to true, the rest
    /// as it came: spliced in before the closing brace when the caller sent
    /// no `stream_options`, else (rarely) written out again with it.
    pub fn with_usage_asked(&self) -> Result<Bytes, BodyError> {
        if self.stream_options.is_none() {
            let end = self
                .raw
                .iter()
                .rposition(|b| *b == b'}')
                .ok_or(BodyError::NotAnObject)?;
            let (head, tail) = self.raw.split_at(end);
            let mut out = BytesMut::with_capacity(self.raw.len() + USAGE_FIELD.len() + 1);
            out.put_slice(head);
            // `{}` has no field to follow; any other object does.
            if head.iter().rev().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
                out.put_u8(b',');
            }
            out.put_slice(USAGE_FIELD);
            out.put_slice(tail);
            return Ok(out.freeze());
        }
        let mut body: Value = serde_json::from_slice(&self.raw).map_err(|_| BodyError::NotJson)?;
        if let Some(object) = body.as_object_mut() {
            let options = object
                .entry("stream_options")
                .or_insert_with(|| serde_json::json!({}));
            if !options.is_object() {
                *options = serde_json::json!({});
            }
            if let Some(options) = options.as_object_mut() {
                options.insert("include_usage".into(), Value::Bool(true));
            }
        }
        serde_json::to_vec(&body)
            .map(Bytes::from)
            .map_err(|_| BodyError::NotJson)
    }
}

const USAGE_FIELD: &[u8] = br#""stream_options":{"include_usage":true}"#;

/// The top-level object, read into a [`CallBody`] without its bytes: the
/// fields the gateway needs are kept (each value also counted by the prompt
/// rule, as every value of the body is); every other value is only counted.
struct TopVisitor<'d> {
    /// Set to the first field seen twice.
    duplicate: &'d mut Option<String>,
}

impl<'de> Visitor<'de> for TopVisitor<'_> {
    type Value = CallBody;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CallBody, A::Error> {
        let mut read = CallBody::default();
        let mut seen: Vec<Cow<'de, str>> = Vec::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if self.duplicate.is_none() && seen.contains(&key) {
                *self.duplicate = Some(key.to_string());
            }
            let known = matches!(
                key.as_ref(),
                "model"
                    | "max_tokens"
                    | "max_completion_tokens"
                    | "n"
                    | "stream"
                    | "stream_options"
            );
            if known {
                let value: Value = map.next_value()?;
                if !NOT_PROMPT.contains(&key.as_ref()) {
                    read.prompt_estimate =
                        read.prompt_estimate.saturating_add(estimate_prompt(&value));
                }
                match key.as_ref() {
                    "model" => read.model = value.as_str().map(str::to_string),
                    "max_tokens" => read.max_tokens = value.as_u64(),
                    "max_completion_tokens" => read.max_completion_tokens = value.as_u64(),
                    "n" => read.n = Some(value),
                    "stream" => read.stream = value == Value::Bool(true),
                    _ => read.stream_options = Some(value),
                }
            } else {
                map.next_value_seed(Estimate {
                    total: &mut read.prompt_estimate,
                    in_list: false,
                    counted: !NOT_PROMPT.contains(&key.as_ref()),
                })?;
            }
            seen.push(key);
        }
        Ok(read)
    }
}

/// Adds a value's prompt tokens to `total` as it is read, by the rule of
/// [`estimate_prompt`]: every string outside the keys of [`NOT_PROMPT`],
/// and one for every number directly in a list (token ids). Values under
/// those keys are still read through (not skipped), so that the body is
/// refused exactly when a tree of it could not be built.
struct Estimate<'t> {
    total: &'t mut u64,
    /// The value is an item of a list.
    in_list: bool,
    /// False under a key of [`NOT_PROMPT`].
    counted: bool,
}

impl Estimate<'_> {
    fn add(&mut self, n: u64) {
        if self.counted {
            *self.total = self.total.saturating_add(n);
        }
    }

    fn number(mut self) {
        if self.in_list {
            self.add(1);
        }
    }
}

impl<'de> DeserializeSeed<'de> for Estimate<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Estimate<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(mut self, s: &str) -> Result<(), E> {
        self.add(estimate_text(s));
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.number();
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.number();
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.number();
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(Estimate {
                total: &mut *self.total,
                in_list: true,
                counted: self.counted,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            map.next_value_seed(Estimate {
                total: &mut *self.total,
                in_list: false,
                counted: self.counted && !NOT_PROMPT.contains(&key.as_ref()),
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<CallBody, BodyError> {
        CallBody::parse(Bytes::from(body.to_string()))
    }

    #[test]
    fn the_estimate_is_the_value_rule_over_the_whole_body() {
        let bodies = [
            r#"{"model":"m","messages":[{"role":"user","content":"Hello there, world!"}]}"#,
            r#"{"model":"m","prompt":[1,2,3,[4,5]],"max_tokens":7,"n":2,"stop":["a b c"]}"#,
            r#"{"model":"m","tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"q":{"type":"string","description":"the query \u00e9 \"quoted\""}}}}}],"stream":true}"#,
            r#"{"model":"m","input":"x","stream_options":{"include_usage":"yes please"},"max_tokens":"lots"}"#,
        ];
        for body in bodies {
            let value: Value = serde_json::from_str(body).unwrap();
            assert_eq!(
                parse(body).unwrap().prompt_estimate,
                estimate_prompt(&value),
                "{body}"
            );
        }
    }

    #[test]
    fn the_fields_the_gateway_needs_are_read() {
        let body = parse(
            r#" {"stream": true, "model": "gpt", "max_tokens": 9, "max_completion_tokens": 8, "n": 3,
                "stream_options": {"include_usage": true}} "#,
        )
        .unwrap();
        assert_eq!(body.model.as_deref(), Some("gpt"));
        assert_eq!(
            (body.max_tokens, body.max_completion_tokens),
            (Some(9), Some(8))
        );
        assert_eq!(body.n, Some(serde_json::json!(3)));
        assert!(body.stream && body.asked_for_usage());
        let plain = parse(r#"{"model":7,"stream":"true","max_tokens":-1}"#).unwrap();
        assert_eq!(plain.model, None);
        assert_eq!(plain.max_tokens, None);
        assert!(!plain.stream && !plain.asked_for_usage());
    }

    #[test]
    fn bad_bodies_are_told_apart() {
        assert_eq!(parse("{").unwrap_err(), BodyError::NotJson);
        assert_eq!(parse(r#"{"model":"m"} x"#).unwrap_err(), BodyError::NotJson);
        assert_eq!(parse("").unwrap_err(), BodyError::NotJson);
        assert_eq!(parse("[1]").unwrap_err(), BodyError::NotAnObject);
        // Not JSON to a tree either: a number beyond f64, wherever it is.
        assert_eq!(parse("2e999").unwrap_err(), BodyError::NotJson);
        assert_eq!(
            parse(r#"{"model":"m","id":1e999}"#).unwrap_err(),
            BodyError::NotJson
        );
        assert_eq!(parse("\"model\"").unwrap_err(), BodyError::NotAnObject);
        assert_eq!(
            parse(r#"{"model":"a","model":"b"}"#).unwrap_err(),
            BodyError::Duplicate("model".into())
        );
        assert_eq!(
            parse(r#"{"x":1,"\u0078":2}"#).unwrap_err(),
            BodyError::Duplicate("x".into())
        );
        assert_eq!(parse(r#"{"x":1,"x":2,"#).unwrap_err(), BodyError::NotJson);
        // Below the top level, the upstream's reading decides nothing the
        // gateway checks.
        assert!(parse(r#"{"model":"a","metadata":{"k":1,"k":2}}"#).is_ok());
        let deep = format!(
            "{{\"model\":\"m\",\"x\":{}{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(parse(&deep).unwrap_err(), BodyError::NotJson);
    }

    #[test]
    fn usage_is_asked_for_with_the_rest_untouched() {
        let body = parse("{\"model\":\"m\",\"stream\":true, \"z\":[1]}\n").unwrap();
        let out = body.with_usage_asked().unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "{\"model\":\"m\",\"stream\":true, \"z\":[1],\"stream_options\":{\"include_usage\":true}}\n"
        );
        let with_options = parse(r#"{"model":"m","stream_options":{"x":1}}"#).unwrap();
        let out: Value = serde_json::from_slice(&with_options.with_usage_asked().unwrap()).unwrap();
        assert_eq!(
            out["stream_options"],
            serde_json::json!({"x": 1, "include_usage": true})
        );
        let odd = parse(r#"{"model":"m","stream_options":null}"#).unwrap();
        let out: Value = serde_json::from_slice(&odd.with_usage_asked().unwrap()).unwrap();
        assert_eq!(
            out["stream_options"],
            serde_json::json!({"include_usage": true})
        );
    }
}
