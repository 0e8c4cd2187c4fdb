//! JSON documents read by the JSON parser. JSON is YAML, and serde_json reads it many times
//! faster than the YAML parser, so an export from `kubectl get … -o json` is parsed here.
//! The two parsers must agree on what loads: anything the JSON reader does not accept
//! exactly as the YAML parser would (a repeated key, deep nesting, trailing comments, any
//! invalid JSON) is left to the YAML parser, which then loads it or reports its error.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A part that is one JSON object.
pub(crate) enum JsonDocument<'a> {
    /// Any object but a large list.
    Object(Value),
    /// The items of a large `*List` with an `apiVersion`, unparsed, so that they can be
    /// parsed on every core (see [`strict`]).
    List(Vec<&'a RawValue>),
}

/// Below this many bytes a JSON document is parsed whole.
pub(crate) const LARGE_JSON: usize = 1 << 20;

/// Nesting up to which the JSON reader accepts a document. The YAML parser refuses more
/// than 64 levels; deeper JSON is left to it, so that it decides.
const MAX_DEPTH: usize = 48;

/// The JSON document of a part, or `None` when the part is anything else (several
/// documents, YAML, JSON the YAML parser might read differently).
pub(crate) fn document(part: &str) -> Option<JsonDocument<'_>> {
    let mut rest = part;
    // A part may start with a document marker and comments.
    loop {
        let t = rest.trim_start();
        if let Some(after) = t.strip_prefix("---")
            && (after.is_empty() || after.starts_with([' ', '\t', '\r', '\n']))
        {
            rest = after;
        } else if t.starts_with('#') {
            rest = t.split_once('\n').map_or("", |(_, r)| r);
        } else {
            rest = t;
            break;
        }
    }
    if !rest.starts_with('{') {
        return None;
    }
    if rest.len() >= LARGE_JSON
        && let Some(items) = list_items(rest)
    {
        return Some(JsonDocument::List(items));
    }
    // Only whole-text JSON: a trailing `---`, `...` or comment is YAML's business.
    strict(rest)
        .filter(Value::is_object)
        .map(JsonDocument::Object)
}

/// `text` as one JSON value, or `None` when it is not exactly one JSON value, repeats a key
/// in a mapping (the YAML parser refuses that; serde_json would keep the last) or nests
/// deeper than [`MAX_DEPTH`].
pub(crate) fn strict(text: &str) -> Option<Value> {
    let mut de = serde_json::Deserializer::from_str(text);
    let v = Strict { depth: 1 }.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(v)
}

/// The items of a JSON `*List` with a non-empty `apiVersion` and an `items` array (what
/// [`crate::Inventory`] expands), without building the list: a 400 MB export held as one
/// `Value` took 6 s to parse on one core and more memory than the whole inventory. Every
/// other member is checked as [`strict`] does; the items are checked when parsed.
fn list_items(text: &str) -> Option<Vec<&RawValue>> {
    let top: TopLevel<'_> = serde_json::from_str(text).ok()?;
    let mut kind = None;
    let mut api_version = None;
    let mut items = None;
    for (key, raw) in top.0 {
        if key == "items" {
            items = Some(raw);
            continue;
        }
        let value = strict(raw.get())?;
        match key.as_str() {
            "kind" => kind = Some(value),
            "apiVersion" => api_version = Some(value),
            _ => {}
        }
    }
    let api_version = api_version?;
    let kind = kind?;
    if api_version.as_str().is_none_or(str::is_empty)
        || !kind.as_str().is_some_and(|k| k.ends_with("List"))
    {
        return None;
    }
    serde_json::from_str(items?.get()).ok()
}

/// The members of a JSON object, unparsed; a repeated key fails.
struct TopLevel<'a>(Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TopLevel<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, &'de RawValue)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if out.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format!("repeated key {key}")));
                    }
                    let raw = map.next_value::<&'de RawValue>()?;
                    out.push((key, raw));
                }
                Ok(TopLevel(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Reads a JSON value like `serde_json::Value` does, but fails on a repeated key or
/// nesting deeper than [`MAX_DEPTH`].
struct Strict {
    depth: usize,
}

impl Strict {
    fn child<E: de::Error>(&self) -> Result<Strict, E> {
        if self.depth > MAX_DEPTH {
            return Err(E::custom("nested too deeply for the JSON reader"));
        }
        Ok(Strict {
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let child = self.child::<A::Error>()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict { depth: child.depth })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let child = self.child::<A::Error>()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("repeated key {key}")));
            }
            let v = map.next_value_seed(Strict { depth: child.depth })?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strict_reads_json_like_serde_json() {
        let text = r#"{"a": [1, -2, 3.5, "x", null, true, {"b": {}}], "c": "\u00e9\n"}"#;
        assert_eq!(
            strict(text),
            Some(serde_json::from_str::<Value>(text).unwrap())
        );
    }

    #[test]
    fn repeated_keys_deep_nesting_and_trailing_text_are_left_to_yaml() {
        assert_eq!(strict(r#"{"a": 1, "b": {"c": 1, "c": 2}}"#), None);
        assert_eq!(strict(r#"{"a": 1} # comment"#), None);
        let nested = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(
            strict(&nested(MAX_DEPTH)),
            Some(serde_json::from_str(&nested(MAX_DEPTH)).unwrap())
        );
        assert_eq!(strict(&nested(MAX_DEPTH + 1)), None);
        // The same for the members of a large list other than its items.
        let pad = "x".repeat(LARGE_JSON);
        let list = |extra: &str| {
            format!(
                r#"{{"apiVersion": "v1", "kind": "List", {extra} "items": [{{"a": "{pad}"}}]}}"#
            )
        };
        assert!(matches!(document(&list("")), Some(JsonDocument::List(i)) if i.len() == 1));
        assert!(document(&list(r#""kind": "List","#)).is_none());
        assert!(document(&list(r#""metadata": {"x": 1, "x": 2},"#)).is_none());
        // Not a list: parsed whole.
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": pad}});
        assert!(matches!(document(&obj.to_string()), Some(JsonDocument::Object(v)) if v == obj));
    }
}
