//! Route templates (`/blog/{slug}`, `/{locale}/blog/{slug}`): which app routes show a document, so the
//! receiver can invalidate them — the old ones on rename and delete as well as the new ones.

use crate::error::SyncError;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but RFC 3986 unreserved characters is escaped in a placeholder's value…
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
/// …except that a slug may span segments (`docs/getting-started`).
const SLUG: &AsciiSet = &SEGMENT.remove(b'/');

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    Slug,
    Id,
    Type,
    Locale,
    Market,
}

impl Var {
    const ALL: [(&'static str, Var); 5] =
        [("slug", Var::Slug), ("id", Var::Id), ("type", Var::Type), ("locale", Var::Locale), ("market", Var::Market)];
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTemplate {
    parts: Vec<Part>,
}

/// The values a template is filled with; `None` means the document has no such value.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteVars<'a> {
    pub slug: Option<&'a str>,
    pub id: &'a str,
    pub doc_type: &'a str,
    pub locale: Option<&'a str>,
    pub market: Option<&'a str>,
}

impl RouteTemplate {
    pub fn parse(field: &str, text: &str) -> Result<Self, SyncError> {
        let expected = "a path starting with `/`, with placeholders among {slug} {id} {type} {locale} {market}";
        if !text.starts_with('/') {
            return Err(SyncError::expected(field, expected, "a path that does not start with `/`"));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(SyncError::expected(field, expected, "a `}` without its `{`"));
            }
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or_else(|| SyncError::expected(field, expected, "a `{` without its `}`"))?;
            let name = &after[..close];
            let var = Var::ALL
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .ok_or_else(|| SyncError::expected(field, expected, format!("the unknown placeholder {{{name}}}")))?;
            parts.push(Part::Var(var));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(RouteTemplate { parts })
    }

    /// The route for these values, or `None` when a placeholder has no value (a page without a locale is not
    /// at `/{locale}/…`).
    pub fn render(&self, vars: &RouteVars) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(var) => {
                    let (value, set) = match var {
                        Var::Slug => (vars.slug?, SLUG),
                        Var::Id => (vars.id, SEGMENT),
                        Var::Type => (vars.doc_type, SEGMENT),
                        Var::Locale => (vars.locale?, SEGMENT),
                        Var::Market => (vars.market?, SEGMENT),
                    };
                    let value = value.trim_matches('/');
                    if value.is_empty() {
                        return None;
                    }
                    out.extend(utf8_percent_encode(value, set));
                }
            }
        }
        Some(out)
    }
}

/// Whether `route` is a path on the app's own origin that names no other place: it starts with one `/` (not
/// `//`, which a browser reads as another host), has no scheme, backslash, whitespace or control character (no
/// CR/LF to split a header with), and no dot segment, plain or percent-encoded (`..`, `%2e%2E`: URL parsers
/// resolve both). Rendered routes always pass; the receiver refuses pushed routes that do not.
pub fn is_same_origin_path(route: &str) -> bool {
    let Some(rest) = route.strip_prefix('/') else { return false };
    if rest.starts_with('/') || route.chars().any(|c| c == '\\' || c.is_whitespace() || c.is_control()) {
        return false;
    }
    let path = route.split(['?', '#']).next().unwrap_or_default();
    !path.split('/').any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

/// `is_same_origin_path` as a bad-input error naming `field`.
pub fn check_route(field: &str, route: &str) -> Result<(), SyncError> {
    if is_same_origin_path(route) {
        Ok(())
    } else {
        Err(SyncError::expected(field, "a path on the app's own origin (`/…`, no `//`, dot segments, spaces or control characters)", "another value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(slug: Option<&'a str>, locale: Option<&'a str>) -> RouteVars<'a> {
        RouteVars { slug, id: "article-1", doc_type: "article", locale, market: None }
    }

    #[test]
    fn renders_placeholders_with_escaping() {
        let t = RouteTemplate::parse("r", "/{locale}/blog/{slug}").unwrap();
        assert_eq!(t.render(&vars(Some("héllo world"), Some("en-US"))).unwrap(), "/en-US/blog/h%C3%A9llo%20world");
        assert_eq!(t.render(&vars(Some("docs/intro"), Some("de"))).unwrap(), "/de/blog/docs/intro");
        assert_eq!(t.render(&vars(Some("/x/"), Some("de"))).unwrap(), "/de/blog/x");
        let by_id = RouteTemplate::parse("r", "/{type}/{id}").unwrap();
        assert_eq!(by_id.render(&vars(None, None)).unwrap(), "/article/article-1");
    }

    #[test]
    fn missing_values_give_no_route() {
        let t = RouteTemplate::parse("r", "/{locale}/blog/{slug}").unwrap();
        assert_eq!(t.render(&vars(Some("a"), None)), None);
        assert_eq!(t.render(&vars(None, Some("en"))), None);
        assert_eq!(t.render(&vars(Some(""), Some("en"))), None);
    }

    #[test]
    fn bad_templates_are_named() {
        for (text, got) in [
            ("blog/{slug}", "does not start"),
            ("/blog/{slug", "without its `}`"),
            ("/blog/slug}", "without its `{`"),
            ("/blog/{title}", "{title}"),
        ] {
            let e = RouteTemplate::parse("routes.article[0]", text).unwrap_err();
            assert!(e.message.starts_with("`routes.article[0]`: expected a path"), "{}", e.message);
            assert!(e.message.contains(got), "{text}: {}", e.message);
        }
    }

    #[test]
    fn same_origin_paths_only() {
        for good in ["/", "/blog/a", "/en/blog/h%C3%A9llo", "/feed.xml", "/a/.well-known", "/search?q=a", "/a..b/c"] {
            assert!(is_same_origin_path(good), "{good}");
        }
        for bad in ["", "blog", "//evil.example/x", "/\\evil", "https://evil.example/", "/a/../admin", "/..", "/a/./b",
            "/a/%2e%2E/admin", "/a/.%2e", "/a\r\nset-cookie: x", "/a b", "/a\tb", "/a\u{0}"] {
            assert!(!is_same_origin_path(bad), "{bad:?}");
        }
        assert_eq!(check_route("routes.current[0]", "//x").unwrap_err().field.as_deref(), Some("routes.current[0]"));
    }
}
