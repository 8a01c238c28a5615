//! Typed reads from untrusted JSON with errors that name the full field path and what was expected.
//! Every input parser (configuration, Function event, webhook body, Machines API and receiver answers)
//! reads through this, so messages look the same everywhere and never echo the value itself.

use crate::error::{kind_of, SyncError};
use serde_json::{Map, Value};

/// A JSON object being read, with the path that leads to it (`""` at the top, `targets[0].` inside).
pub struct Obj<'a> {
    pub map: &'a Map<String, Value>,
    pub path: String,
}

impl<'a> Obj<'a> {
    /// Read `value` as an object; `what` describes the whole input in the error ("the Function event").
    pub fn root(value: &'a Value, field: &str, what: &str) -> Result<Self, SyncError> {
        match value {
            Value::Object(map) => Ok(Obj { map, path: prefix_of(field) }),
            other => Err(SyncError::expected(name_of(field, what), "a JSON object", kind_of(other))),
        }
    }

    pub fn field(&self, key: &str) -> String {
        format!("{}{key}", self.path)
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Reject keys we do not know, so a typo in configuration is an error instead of a silent default.
    pub fn deny_unknown(&self, known: &[&str]) -> Result<(), SyncError> {
        for key in self.map.keys() {
            if !known.contains(&key.as_str()) {
                return Err(SyncError::bad_field(
                    self.field(key),
                    format!("unknown setting; expected one of {}", known.join(", ")),
                ));
            }
        }
        Ok(())
    }

    pub fn obj(&self, key: &str) -> Result<Option<Obj<'a>>, SyncError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Obj { map, path: format!("{}.", self.field(key)) })),
            Some(other) => Err(SyncError::expected(self.field(key), "an object", kind_of(other))),
        }
    }

    pub fn str_opt(&self, key: &str) -> Result<Option<&'a str>, SyncError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(SyncError::expected(self.field(key), "a string", kind_of(other))),
        }
    }

    /// A required, non-empty string.
    pub fn str_req(&self, key: &str, expected: &str) -> Result<&'a str, SyncError> {
        match self.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.as_str()),
            Some(other) => Err(SyncError::expected(self.field(key), expected, kind_of(other))),
            None => Err(SyncError::expected(self.field(key), expected, "nothing (the field is missing)")),
        }
    }

    pub fn bool_opt(&self, key: &str) -> Result<Option<bool>, SyncError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(SyncError::expected(self.field(key), "true or false", kind_of(other))),
        }
    }

    /// An optional whole number within `min..=max`.
    pub fn u64_opt(&self, key: &str, min: u64, max: u64) -> Result<Option<u64>, SyncError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(SyncError::expected(
                    self.field(key),
                    format!("a whole number from {min} to {max}"),
                    describe_number(v),
                )),
            },
        }
    }

    /// A string or a list of strings (both are common in hand-written configuration).
    pub fn str_list_opt(&self, key: &str) -> Result<Option<Vec<String>>, SyncError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => str_list(&self.field(key), v).map(Some),
        }
    }
}

/// A string or an array of non-empty strings.
pub fn str_list(field: &str, value: &Value) -> Result<Vec<String>, SyncError> {
    match value {
        Value::String(s) if !s.is_empty() => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                other => Err(SyncError::expected(format!("{field}[{i}]"), "a non-empty string", kind_of(other))),
            })
            .collect(),
        other => Err(SyncError::expected(field, "a string or a list of strings", kind_of(other))),
    }
}

fn describe_number(v: &Value) -> String {
    match v {
        Value::Number(n) => format!("{n}"),
        other => kind_of(other).to_string(),
    }
}

fn prefix_of(field: &str) -> String {
    if field.is_empty() { String::new() } else { format!("{field}.") }
}

fn name_of(field: &str, what: &str) -> String {
    if field.is_empty() { what.to_string() } else { field.to_string() }
}

/// A JSON value as text. Through `serde_json::to_string`, the writer every other output uses (`Value`'s `Display`
/// would compile a second serializer into the module). A `Value` always serialises: its keys are strings.
pub fn text(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// An object of `pairs`, for a request body: built from values directly (`json!` would convert each through
/// `to_value` and unwrap it, compiling a second serializer and the error's `Debug` into the module).
pub fn object(pairs: Vec<(&str, Value)>) -> Value {
    // Inserted one by one: collecting would sort the pairs first, compiling a stable sort into the module.
    let mut map = Map::new();
    for (key, value) in pairs {
        map.insert(key.to_string(), value);
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_paths_and_kinds() {
        let v = json!({"a": {"b": 3, "c": "x", "d": [1]}});
        let root = Obj::root(&v, "", "config").unwrap();
        let a = root.obj("a").unwrap().unwrap();
        assert_eq!(a.u64_opt("b", 5, 9).unwrap_err().message, "`a.b`: expected a whole number from 5 to 9, got 3");
        assert_eq!(a.bool_opt("c").unwrap_err().message, "`a.c`: expected true or false, got a string");
        assert_eq!(a.str_list_opt("d").unwrap_err().message, "`a.d[0]`: expected a non-empty string, got a number");
        assert!(a.deny_unknown(&["b", "c"]).unwrap_err().message.starts_with("`a.d`: unknown setting"));
        assert_eq!(a.str_req("e", "an id").unwrap_err().message, "`a.e`: expected an id, got nothing (the field is missing)");
    }

    #[test]
    fn root_must_be_an_object() {
        let e = Obj::root(&json!([1]), "", "the Function event").err().unwrap();
        assert_eq!(e.message, "`the Function event`: expected a JSON object, got an array");
    }
}
