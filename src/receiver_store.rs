//! The receiver's own state in a SQL store — the marks (tombstones among them), the remembered idempotency keys and
//! the catch-up high-water mark — so a restarted Machine starts from where it was instead of reloading everything.
//! The store is SQLite (Node's built-in `node:sqlite`) on a Fly Volume, or on a LiteFS mount.
//!
//! Sans-IO: this module writes the statements and reads the rows back; the receiver's I/O layer runs them. A
//! change's statements run in the same transaction as the app's own writes (the app writes through the same
//! database), and the transaction commits only when every hook succeeded: a crash at any point before the
//! commit leaves neither the app's writes nor the mark (the change is applied again, once), a crash after it
//! leaves both (the change is a duplicate).

use crate::error::SyncError;
use crate::receiver::{Commit, Mark, Snapshot};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const MARKS: &str = "sanity_fly_sync_marks";
pub const KEYS: &str = "sanity_fly_sync_keys";
pub const META: &str = "sanity_fly_sync_meta";
/// The `META` row that holds the catch-up high-water mark (ms since the epoch).
pub const CATCH_UP_MARK: &str = "catch_up_mark";

/// One SQL statement and its parameters (strings, numbers, null).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Value>,
}

fn statement(sql: impl Into<String>, params: Vec<Value>) -> Statement {
    Statement { sql: sql.into(), params }
}

/// The tables, made if missing.
pub fn schema() -> Vec<Statement> {
    vec![
        statement(
            format!(
                "CREATE TABLE IF NOT EXISTS {MARKS} (id TEXT PRIMARY KEY, updated_ms INTEGER NOT NULL, rev TEXT NOT NULL, \
                 deleted INTEGER NOT NULL, type TEXT NOT NULL, updated_at TEXT NOT NULL, routes TEXT NOT NULL, \
                 pulled INTEGER NOT NULL DEFAULT 0)"
            ),
            vec![],
        ),
        statement(format!("CREATE TABLE IF NOT EXISTS {KEYS} (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE)"), vec![]),
        statement(format!("CREATE TABLE IF NOT EXISTS {META} (name TEXT PRIMARY KEY, value TEXT NOT NULL)"), vec![]),
    ]
}

/// The queries that read the state back, in the order `snapshot` takes their rows.
pub fn load_queries() -> [Statement; 3] {
    [
        statement(format!("SELECT id, updated_ms, rev, deleted, type, updated_at, routes, pulled FROM {MARKS}"), vec![]),
        statement(format!("SELECT key FROM {KEYS} ORDER BY seq"), vec![]),
        statement(format!("SELECT value FROM {META} WHERE name = ?"), vec![json!(CATCH_UP_MARK)]),
    ]
}

/// The query for one document's mark (a LiteFS replica reads what the primary recorded).
pub fn mark_query(id: &str) -> Statement {
    statement(format!("SELECT id, updated_ms, rev, deleted, type, updated_at, routes, pulled FROM {MARKS} WHERE id = ?"), vec![json!(id)])
}

/// Record a committed change: its mark, its key, and forget keys beyond the `remember` newest.
pub fn commit(c: &Commit, remember: usize) -> Vec<Statement> {
    let m = &c.mark;
    vec![
        statement(
            format!("INSERT OR REPLACE INTO {MARKS} (id, updated_ms, rev, deleted, type, updated_at, routes, pulled) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
            vec![
                json!(c.id),
                json!(m.updated_ms),
                json!(m.rev),
                json!(i64::from(m.deleted)),
                json!(m.doc_type),
                json!(m.updated_at),
                json!(serde_json::to_string(&m.routes).expect("strings serialise")),
                json!(i64::from(m.pulled)),
            ],
        ),
        statement(format!("INSERT OR IGNORE INTO {KEYS} (key) VALUES (?)"), vec![json!(c.key)]),
        statement(format!("DELETE FROM {KEYS} WHERE seq <= (SELECT MAX(seq) FROM {KEYS}) - ?"), vec![json!(remember)]),
    ]
}

/// Record the catch-up high-water mark.
pub fn catch_up_mark(mark_ms: u64) -> Statement {
    statement(format!("INSERT OR REPLACE INTO {META} (name, value) VALUES (?, ?)"), vec![json!(CATCH_UP_MARK), json!(mark_ms.to_string())])
}

#[derive(Deserialize)]
struct MarkRow {
    id: String,
    updated_ms: u64,
    rev: String,
    deleted: u8,
    #[serde(rename = "type")]
    doc_type: String,
    updated_at: String,
    routes: String,
    #[serde(default)]
    pulled: u8,
}

impl MarkRow {
    fn into_mark(self) -> Result<(String, Mark), SyncError> {
        let routes: Vec<String> = serde_json::from_str(&self.routes).map_err(|_| stored("routes", "a JSON list of routes"))?;
        Ok((self.id, Mark {
            updated_ms: self.updated_ms,
            rev: self.rev,
            deleted: self.deleted != 0,
            doc_type: self.doc_type,
            updated_at: self.updated_at,
            routes,
            pulled: self.pulled != 0,
        }))
    }
}

fn stored(field: &str, expected: &str) -> SyncError {
    SyncError::expected(format!("store.{field}"), format!("{expected} (the receiver's store was written by something else, or is damaged)"), "another value")
}

fn rows<'a, T: Deserialize<'a>>(text: &'a str, table: &str) -> Result<Vec<T>, SyncError> {
    serde_json::from_str(text).map_err(|_| stored(table, "rows of the receiver's own table"))
}

/// The rows of `load_queries` (each as a JSON list of row objects) → the receiver's state and the catch-up mark.
pub fn snapshot(marks: &str, keys: &str, meta: &str) -> Result<(Snapshot, Option<u64>), SyncError> {
    let marks = rows::<MarkRow>(marks, MARKS)?.into_iter().map(MarkRow::into_mark).collect::<Result<Vec<_>, _>>()?;
    #[derive(Deserialize)]
    struct Key {
        key: String,
    }
    #[derive(Deserialize)]
    struct Meta {
        value: String,
    }
    let keys = rows::<Key>(keys, KEYS)?.into_iter().map(|k| k.key).collect();
    let mark = match rows::<Meta>(meta, META)?.first() {
        Some(m) => Some(m.value.parse::<u64>().map_err(|_| stored(CATCH_UP_MARK, "a time in ms"))?),
        None => None,
    };
    Ok((Snapshot { marks, keys }, mark))
}

/// The rows of `mark_query` → the document's mark, if the store holds one.
pub fn one_mark(text: &str) -> Result<Option<Mark>, SyncError> {
    Ok(rows::<MarkRow>(text, MARKS)?.into_iter().next().map(MarkRow::into_mark).transpose()?.map(|(_, m)| m))
}

/// Default time a LiteFS replica waits for a change to reach it before it answers 503 (retryable): below the
/// Function's request timeout, so the Function reads the answer instead of timing out.
pub const DEFAULT_REPLICATION_WAIT_MS: u64 = 3_000;

/// How the receiver keeps its state: in memory (the default), or in a store; and, on a LiteFS mount, how long a
/// replica waits for the primary's change to replicate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreOptions {
    pub durable: bool,
    pub litefs: Option<LiteFs>,
}

/// Default LiteFS mount directory (LiteFS's own default, `fuse.dir`).
pub const DEFAULT_LITEFS_DIR: &str = "/litefs";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiteFs {
    pub replication_wait_ms: u64,
    /// `<mount dir>/.primary`: present on a replica (holding the primary's hostname), absent on the primary.
    pub primary_file: String,
}

impl StoreOptions {
    /// From `{store: true|false, litefs: {dir?, replicationWaitMs?} | null}` (the adapter's view of the `store` and
    /// `litefs` options).
    pub fn from_json(value: &Value) -> Result<StoreOptions, SyncError> {
        let obj = crate::json_read::Obj::root(value, "", "the store options")?;
        obj.deny_unknown(&["store", "litefs"])?;
        let durable = obj.bool_opt("store")?.unwrap_or(false);
        let litefs = match obj.get("litefs") {
            None | Some(Value::Null) => None,
            Some(_) => {
                let l = obj.obj("litefs")?.ok_or_else(|| SyncError::expected("litefs", "an object", "another value"))?;
                l.deny_unknown(&["dir", "replicationWaitMs"])?;
                let dir = l.str_opt("dir")?.unwrap_or(DEFAULT_LITEFS_DIR).trim_end_matches('/');
                if !dir.starts_with('/') || dir.contains('\0') {
                    return Err(SyncError::expected(l.field("dir"), "the LiteFS mount directory, an absolute path (e.g. /litefs)", "another value"));
                }
                if !durable {
                    return Err(SyncError::expected(
                        "litefs",
                        "a receiver whose `store` is on the LiteFS mount (store: sqliteStore('/litefs/sync.db')): only the primary writes, and replicas read what it recorded",
                        "no store",
                    ));
                }
                Some(LiteFs {
                    replication_wait_ms: l.u64_opt("replicationWaitMs", 10, 600_000)?.unwrap_or(DEFAULT_REPLICATION_WAIT_MS),
                    primary_file: format!("{dir}/.primary"),
                })
            }
        };
        Ok(StoreOptions { durable, litefs })
    }
}

/// A LiteFS `.primary` file's content (the primary's hostname, a newline after it) as a short name for messages.
pub fn primary_name(content: &str) -> String {
    crate::error::shorten(content.trim(), 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_options_litefs_needs_a_store() {
        assert_eq!(StoreOptions::from_json(&json!({})).unwrap(), StoreOptions::default());
        let o = StoreOptions::from_json(&json!({"store": true, "litefs": {}})).unwrap();
        assert_eq!(o.litefs, Some(LiteFs { replication_wait_ms: DEFAULT_REPLICATION_WAIT_MS, primary_file: "/litefs/.primary".into() }));
        let o = StoreOptions::from_json(&json!({"store": true, "litefs": {"dir": "/mnt/litefs/"}})).unwrap();
        assert_eq!(o.litefs.unwrap().primary_file, "/mnt/litefs/.primary");
        assert_eq!(StoreOptions::from_json(&json!({"store": true, "litefs": {"dir": "litefs"}})).unwrap_err().field.as_deref(), Some("litefs.dir"));
        let e = StoreOptions::from_json(&json!({"store": false, "litefs": {"replicationWaitMs": 500}})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("litefs"));
        assert!(e.message.contains("LiteFS mount"), "{}", e.message);
        let e = StoreOptions::from_json(&json!({"store": true, "litefs": {"replicationWaitMs": 1}})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("litefs.replicationWaitMs"));
        assert_eq!(primary_name("3d8d413b29d089.vm.web.internal\n"), "3d8d413b29d089.vm.web.internal");
    }

    fn mark(rev: &str, ms: u64, deleted: bool) -> Mark {
        Mark { updated_ms: ms, rev: rev.into(), deleted, doc_type: "page".into(), updated_at: "2026-11-27T10:00:00Z".into(), routes: vec!["/a".into()], pulled: false }
    }

    /// A store in memory that runs exactly the statements this module writes (what `node:sqlite` would hold).
    #[derive(Default)]
    struct Tables {
        marks: std::collections::BTreeMap<String, Value>,
        keys: Vec<(u64, String)>,
        next: u64,
        meta: std::collections::BTreeMap<String, String>,
    }

    impl Tables {
        fn run(&mut self, s: &Statement) {
            let p = &s.params;
            if s.sql.starts_with(&format!("INSERT OR REPLACE INTO {MARKS}")) {
                let row = json!({"id": p[0], "updated_ms": p[1], "rev": p[2], "deleted": p[3], "type": p[4], "updated_at": p[5], "routes": p[6], "pulled": p[7]});
                self.marks.insert(p[0].as_str().unwrap().into(), row);
            } else if s.sql.starts_with(&format!("INSERT OR IGNORE INTO {KEYS}")) {
                let key = p[0].as_str().unwrap().to_string();
                if !self.keys.iter().any(|(_, k)| *k == key) {
                    self.next += 1;
                    self.keys.push((self.next, key));
                }
            } else if s.sql.starts_with(&format!("DELETE FROM {KEYS}")) {
                let max = self.keys.iter().map(|(s, _)| *s).max().unwrap_or(0);
                let keep = p[0].as_u64().unwrap();
                self.keys.retain(|(s, _)| *s + keep > max);
            } else if s.sql.starts_with(&format!("INSERT OR REPLACE INTO {META}")) {
                self.meta.insert(p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into());
            } else {
                panic!("unexpected statement {}", s.sql);
            }
        }

        fn load(&self) -> (Snapshot, Option<u64>) {
            let marks = Value::Array(self.marks.values().cloned().collect()).to_string();
            let keys = Value::Array(self.keys.iter().map(|(_, k)| json!({"key": k})).collect()).to_string();
            let meta = Value::Array(self.meta.get(CATCH_UP_MARK).map(|v| json!({"value": v})).into_iter().collect()).to_string();
            snapshot(&marks, &keys, &meta).unwrap()
        }
    }

    #[test]
    fn what_is_committed_reads_back_as_it_was_and_keys_stay_bounded() {
        let mut t = Tables::default();
        for (i, rev) in ["r1", "r2", "r3", "r4"].iter().enumerate() {
            let c = Commit { id: "p".into(), key: format!("upsert:p:{rev}"), mark: mark(rev, 1_000 + i as u64, false) };
            for s in commit(&c, 3) {
                t.run(&s);
            }
        }
        // A tombstone catch-up wrote (pulled): the push of that revision still applies after a restart.
        let tomb = Commit { id: "q".into(), key: "delete:q:r9".into(), mark: Mark { pulled: true, ..mark("r9", 5_000, true) } };
        for s in commit(&tomb, 3) {
            t.run(&s);
        }
        t.run(&catch_up_mark(1_795_780_800_000));
        let (snap, high) = t.load();
        assert_eq!(high, Some(1_795_780_800_000));
        assert_eq!(snap.marks, vec![("p".to_string(), mark("r4", 1_003, false)), ("q".to_string(), Mark { pulled: true, ..mark("r9", 5_000, true) })]);
        assert_eq!(snap.keys, ["upsert:p:r3", "upsert:p:r4", "delete:q:r9"], "the newest three, oldest first");
    }

    #[test]
    fn rows_written_by_something_else_are_a_clear_error_naming_the_table() {
        let e = snapshot(r#"[{"id": 5}]"#, "[]", "[]").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("store.sanity_fly_sync_marks"));
        assert!(e.message.contains("written by something else"), "{}", e.message);
        let e = snapshot("[]", "[]", r#"[{"value": "soon"}]"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("store.catch_up_mark"));
        let bad_routes = r#"[{"id":"p","updated_ms":1,"rev":"r","deleted":0,"type":"page","updated_at":"t","routes":"/a"}]"#;
        assert_eq!(snapshot(bad_routes, "[]", "[]").unwrap_err().field.as_deref(), Some("store.routes"));
        assert_eq!(one_mark("[]").unwrap(), None);
    }

    #[test]
    fn the_schema_makes_the_three_tables_if_missing() {
        let sql: Vec<String> = schema().into_iter().map(|s| s.sql).collect();
        assert!(sql.iter().all(|s| s.starts_with("CREATE TABLE IF NOT EXISTS sanity_fly_sync_")), "{sql:?}");
        assert_eq!(load_queries()[2].params, [json!("catch_up_mark")]);
    }
}
