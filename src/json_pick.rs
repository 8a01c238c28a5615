//! Picks the few fields a reader needs out of a large JSON answer in one pass: the wanted shape is data
//! (`Want`), not a struct per shape, so one reader — one serde seed, compiled once — serves every shape. Keys
//! not wanted are skipped without being kept; strings are borrowed from the text where they need no unescaping.
//! Absent and `null` fields are `Got::Absent`; a wanted field of another type stops the read, and the error
//! names its path and what was expected (never the value).

use crate::error::SyncError;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

/// The shape to read.
#[derive(Debug)]
pub enum Want {
    /// A string.
    Text,
    /// A whole number from 0 to 2⁶⁴−1.
    Number,
    /// An object, of which only these keys are kept (others are skipped).
    Fields(&'static [(&'static str, Want)]),
    /// A list, each item read as the inner shape.
    Each(&'static Want),
    /// A list whose items are only counted.
    Count,
    /// A string if it is one; any other value reads as absent.
    Loose,
}

impl Want {
    fn describe(&self) -> &'static str {
        match self {
            Want::Text | Want::Loose => "a string",
            Want::Number => "a whole number",
            Want::Fields(_) => "an object",
            Want::Each(_) | Want::Count => "a list",
        }
    }
}

/// What was read: the wanted shape, or `Absent` (missing or `null`).
#[derive(Debug)]
pub enum Got<'a> {
    Absent,
    Text(Cow<'a, str>),
    Number(u64),
    /// One value per wanted key, in the `Want::Fields` order.
    Fields(&'static [(&'static str, Want)], Vec<Got<'a>>),
    Each(Vec<Got<'a>>),
    Count(usize),
}

impl<'a> Got<'a> {
    /// Field `key` of an object (`Absent` when it is not one, or the key is not among the wanted ones).
    pub fn get(&self, key: &str) -> &Got<'a> {
        match self {
            Got::Fields(names, values) => names.iter().position(|(name, _)| *name == key).map_or(&Got::Absent, |i| &values[i]),
            _ => &Got::Absent,
        }
    }

    /// Take field `key` out of an object, leaving `Absent`.
    pub fn take(&mut self, key: &str) -> Got<'a> {
        match self {
            Got::Fields(names, values) => match names.iter().position(|(name, _)| *name == key) {
                Some(i) => std::mem::replace(&mut values[i], Got::Absent),
                None => Got::Absent,
            },
            _ => Got::Absent,
        }
    }

    pub fn text(self) -> Option<Cow<'a, str>> {
        match self {
            Got::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Got::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn number(&self) -> Option<u64> {
        match self {
            Got::Number(n) => Some(*n),
            _ => None,
        }
    }

    pub fn items(self) -> Vec<Got<'a>> {
        match self {
            Got::Each(items) => items,
            _ => Vec::new(),
        }
    }

    pub fn count(&self) -> Option<usize> {
        match self {
            Got::Count(n) => Some(*n),
            _ => None,
        }
    }

    pub fn is_absent(&self) -> bool {
        matches!(self, Got::Absent)
    }
}

/// Read `text` as `want`. `root` names the whole answer in errors (`machines`: `machines[3].region`).
pub fn pick<'a>(text: &'a str, want: &'static Want, root: &str) -> Result<Got<'a>, PickError> {
    let trail = RefCell::new(Trail::default());
    let mut de = serde_json::Deserializer::from_str(text);
    let read = Seed { want, trail: &trail }.deserialize(&mut de).and_then(|got| de.end().map(|()| got));
    // `null` where a field may be absent is absent; the answer itself must be there.
    if let Ok(Got::Absent) = read {
        return Err(PickError::Field(SyncError::expected(root, want.describe(), "null")));
    }
    read.map_err(|e| {
        let trail = trail.into_inner();
        match trail.expected.filter(|_| e.is_data()) {
            Some(expected) => {
                let path: String = trail.outwards.iter().rev().map(Step::text).collect();
                PickError::Field(SyncError::expected(format!("{root}{path}"), expected, "another value"))
            }
            None => PickError::NotJson { line: e.line(), column: e.column() },
        }
    })
}

/// Why a pick failed: a wanted field of another type (its error names it), or text that is not JSON (where).
#[derive(Debug)]
pub enum PickError {
    Field(SyncError),
    NotJson { line: usize, column: usize },
}

impl fmt::Display for PickError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PickError::Field(e) => f.write_str(&e.message),
            PickError::NotJson { line, column } => write!(f, "line {line} column {column}"),
        }
    }
}

/// Where a read failed, written on the way back out: what the innermost value expected, then each key and
/// index from there outwards.
#[derive(Default)]
struct Trail {
    expected: Option<&'static str>,
    outwards: Vec<Step>,
}

enum Step {
    Key(&'static str),
    Index(usize),
}

impl Step {
    fn text(&self) -> String {
        match self {
            Step::Key(key) => format!(".{key}"),
            Step::Index(i) => format!("[{i}]"),
        }
    }
}

#[derive(Clone, Copy)]
struct Seed<'w> {
    want: &'static Want,
    trail: &'w RefCell<Trail>,
}

impl Seed<'_> {
    /// Record a failed read of this value (the innermost one's expectation is kept), and the key or index that
    /// led to it.
    fn failed<E>(self, step: Option<Step>, e: E) -> E {
        let mut trail = self.trail.borrow_mut();
        trail.expected.get_or_insert(self.want.describe());
        trail.outwards.extend(step);
        e
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Got<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Got<'de>, D::Error> {
        d.deserialize_option(Present(self))
    }
}

/// A value that may be `null`.
struct Present<'w>(Seed<'w>);

impl<'de> Visitor<'de> for Present<'_> {
    type Value = Got<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0.want.describe())
    }
    fn visit_none<E>(self) -> Result<Got<'de>, E> {
        Ok(Got::Absent)
    }
    fn visit_unit<E>(self) -> Result<Got<'de>, E> {
        Ok(Got::Absent)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Got<'de>, D::Error> {
        let seed = self.0;
        let read = match seed.want {
            Want::Text => d.deserialize_str(Shaped(seed)),
            Want::Number => d.deserialize_u64(Shaped(seed)),
            Want::Fields(_) => d.deserialize_map(Shaped(seed)),
            Want::Each(_) | Want::Count => d.deserialize_seq(Shaped(seed)),
            Want::Loose => d.deserialize_any(Shaped(seed)),
        };
        read.map_err(|e| seed.failed(None, e))
    }
}

/// A present value of the wanted shape.
struct Shaped<'w>(Seed<'w>);

impl Shaped<'_> {
    /// Only `Want::Loose` takes values of any type: what is not a string is absent.
    fn loose<'de, E: de::Error>(self, got: de::Unexpected) -> Result<Got<'de>, E> {
        match self.0.want {
            Want::Loose => Ok(Got::Absent),
            _ => Err(E::invalid_type(got, &self)),
        }
    }
}

impl<'de> Visitor<'de> for Shaped<'_> {
    type Value = Got<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0.want.describe())
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Got<'de>, E> {
        Ok(Got::Text(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Got<'de>, E> {
        Ok(Got::Text(Cow::Owned(s.to_string())))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Got<'de>, E> {
        Ok(Got::Number(n))
    }
    // A number that is negative or not whole: absent for `Want::Loose`, refused for `Want::Number`.
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Got<'de>, E> {
        self.loose(de::Unexpected::Signed(n))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Got<'de>, E> {
        self.loose(de::Unexpected::Float(n))
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Got<'de>, E> {
        self.loose(de::Unexpected::Bool(b))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Got<'de>, A::Error> {
        let Want::Fields(fields) = self.0.want else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(Got::Absent);
        };
        let mut values: Vec<Got<'de>> = fields.iter().map(|_| Got::Absent).collect();
        while let Some(wanted) = map.next_key_seed(KeyOf(fields))? {
            match wanted {
                Some(i) => {
                    let seed = Seed { want: &fields[i].1, trail: self.0.trail };
                    values[i] = map.next_value_seed(seed).map_err(|e| seed.failed(Some(Step::Key(fields[i].0)), e))?;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Got::Fields(fields, values))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Got<'de>, A::Error> {
        match self.0.want {
            Want::Each(item) => {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                let seed = Seed { want: item, trail: self.0.trail };
                while let Some(got) = seq.next_element_seed(seed).map_err(|e| seed.failed(Some(Step::Index(items.len())), e))? {
                    items.push(got);
                }
                Ok(Got::Each(items))
            }
            want => {
                let mut n = 0;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(if matches!(want, Want::Count) { Got::Count(n) } else { Got::Absent })
            }
        }
    }
}

/// A key, read as its position among the wanted ones (`None`: not wanted), compared where it lies in the text.
struct KeyOf(&'static [(&'static str, Want)]);

impl<'de> DeserializeSeed<'de> for KeyOf {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyOf {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|(name, _)| *name == key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ITEM: Want = Want::Fields(&[("id", Want::Text), ("n", Want::Number), ("tags", Want::Count), ("inner", Want::Fields(&[("name", Want::Text)]))]);
    const LIST: Want = Want::Each(&ITEM);

    #[test]
    fn keeps_only_the_wanted_keys_and_borrows_plain_strings() {
        let text = r#"[{"id":"a","skip":{"deep":[1,2,{"x":null}]},"n":7,"tags":[1,"b",{}],"inner":{"name":"q\"z","other":1}},{"id":null}]"#;
        let items = pick(text, &LIST, "items").unwrap().items();
        assert_eq!(items.len(), 2);
        assert!(matches!(items[0].get("id"), Got::Text(Cow::Borrowed("a"))));
        assert_eq!(items[0].get("n").number(), Some(7));
        assert_eq!(items[0].get("tags").count(), Some(3));
        assert_eq!(items[0].get("inner").get("name").as_str(), Some("q\"z"));
        assert!(items[0].get("skip").is_absent(), "not wanted, not kept");
        assert!(items[1].get("id").is_absent() && items[1].get("n").is_absent(), "null and missing are both absent");
    }

    #[test]
    fn a_wanted_field_of_another_type_is_named_with_its_path() {
        let cases = [
            (r#"[{"id":"a"},{"id":5}]"#, "`items[1].id`: expected a string, got another value"),
            (r#"[{"n":-1}]"#, "`items[0].n`: expected a whole number, got another value"),
            (r#"[{"n":1.5}]"#, "`items[0].n`: expected a whole number, got another value"),
            (r#"[{"inner":{"name":["x"]}}]"#, "`items[0].inner.name`: expected a string, got another value"),
            (r#"[{"tags":{}}]"#, "`items[0].tags`: expected a list, got another value"),
            (r#"{"id":"a"}"#, "`items`: expected a list, got another value"),
            ("null", "`items`: expected a list, got null"),
            (r#"["secret-value"]"#, "`items[0]`: expected an object, got another value"),
        ];
        for (text, message) in cases {
            match pick(text, &LIST, "items") {
                Err(PickError::Field(e)) => assert_eq!(e.message, message, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_loose_field_is_a_string_or_absent_whatever_else_it_holds() {
        const LOOSE: Want = Want::Each(&Want::Fields(&[("m", Want::Loose)]));
        let text = r#"[{"m":"jp"},{"m":["us","jp"]},{"m":{"a":1}},{"m":5},{"m":-5},{"m":1.5},{"m":true},{"m":null},{}]"#;
        let got: Vec<Option<String>> = pick(text, &LOOSE, "x").unwrap().items().iter().map(|i| i.get("m").as_str().map(String::from)).collect();
        assert_eq!(got, [Some("jp".to_string()), None, None, None, None, None, None, None, None]);
    }

    #[test]
    fn text_that_is_not_json_says_where() {
        for text in ["<html>", r#"[{"id":"a""#, r#"[{"id":"a"}] trailing"#, ""] {
            assert!(matches!(pick(text, &LIST, "items"), Err(PickError::NotJson { .. })), "{text}");
        }
    }
}
