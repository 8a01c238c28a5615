//! Route templates (`/blog/{slug}`, `/{locale}/blog/{slug}`): which app routes show a document, so the
//! receiver can invalidate them — the old ones on rename and delete as well as the new ones.

use crate::error::SyncError;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but RFC 3986 unreserved characters is escaped in a placeholder's value, so a value (a slug, a
/// locale, an id: content an editor typed) fills at most one path segment: `/`, `?`, `#`, `%`, `\\`, spaces and
/// control characters are all encoded. A nested slug `docs/intro` renders `docs%2Fintro`.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

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
        let template = RouteTemplate { parts };
        // The template's own text must keep every route on the app's origin (no `//`, dot segments, spaces).
        let sample = RouteVars { slug: Some("x"), id: "x", doc_type: "x", locale: Some("x"), market: Some("x") };
        if template.render(&sample).is_none() {
            return Err(SyncError::expected(field, expected, "a path that is not on the app's own origin (`//`, a dot segment, a space or a control character)"));
        }
        Ok(template)
    }

    /// The route for these values, or `None` when a placeholder has no usable value: none at all (a page
    /// without a locale is not at `/{locale}/…`), empty once surrounding `/` are trimmed, or only dots (`..`
    /// would climb out of the route; `%2e%2e` is a dot segment to URL parsers too). Every route returned passes
    /// `is_same_origin_path`.
    pub fn render(&self, vars: &RouteVars) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(var) => {
                    let value = match var {
                        Var::Slug => vars.slug?,
                        Var::Id => vars.id,
                        Var::Type => vars.doc_type,
                        Var::Locale => vars.locale?,
                        Var::Market => vars.market?,
                    };
                    let value = value.trim_matches('/');
                    if value.bytes().all(|b| b == b'.') {
                        return None;
                    }
                    out.extend(utf8_percent_encode(value, SEGMENT));
                }
            }
        }
        is_same_origin_path(&out).then_some(out)
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
        assert_eq!(t.render(&vars(Some("docs/intro"), Some("de"))).unwrap(), "/de/blog/docs%2Fintro", "one segment");
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
    fn a_value_from_content_fills_exactly_one_segment() {
        // An editor's slug `../../admin` used to render `/blog/../../admin`; CRLF and absolute URLs passed too.
        let hostile = [
            "../../admin", "..", ".", "...", "/../", "%2e%2e", "%2E%2e/admin", "a/../../b", "https://evil.example/x",
            "//evil.example", "a\r\nset-cookie: x=1", "a\tb", "a\u{0}b", "\\evil", "a?b#c", "a b", "ü/ß", "\u{202e}x",
        ];
        let templates = ["/blog/{slug}", "/{locale}/blog/{slug}", "/{market}/{type}/{id}", "/p/{id}", "/{locale}{market}/x"];
        for template in templates {
            let t = RouteTemplate::parse("r", template).unwrap();
            for value in hostile {
                let all = RouteVars { slug: Some(value), id: value, doc_type: value, locale: Some(value), market: Some(value) };
                let mixed = RouteVars { slug: Some(value), id: "a-1", doc_type: "page", locale: Some("en"), market: Some(value) };
                for vars in [all, mixed] {
                    if let Some(route) = t.render(&vars) {
                        assert!(is_same_origin_path(&route), "{template} with {value:?} rendered {route:?}");
                        let segments = template.matches('/').count();
                        assert_eq!(route.matches('/').count(), segments, "{template} with {value:?} rendered {route:?}");
                    }
                }
            }
        }
        let blog = RouteTemplate::parse("r", "/blog/{slug}").unwrap();
        let slug = |s: &'static str| blog.render(&vars(Some(s), None));
        assert_eq!(slug("../../admin").as_deref(), Some("/blog/..%2F..%2Fadmin"));
        assert_eq!(slug("a\r\nb").as_deref(), Some("/blog/a%0D%0Ab"));
        assert_eq!(slug("https://evil.example/x").as_deref(), Some("/blog/https%3A%2F%2Fevil.example%2Fx"));
        assert_eq!(slug("%2e%2e").as_deref(), Some("/blog/%252e%252e"), "a literal % is encoded, never decoded");
        for dots in ["..", ".", "...", "/../"] {
            assert_eq!(slug(dots), None, "{dots:?} renders no route");
        }
        // Two placeholders in one segment cannot make a dot segment either: each value holds a non-dot.
        let joined = RouteTemplate::parse("r", "/{locale}{market}/x").unwrap();
        let vars = RouteVars { slug: None, id: "a", doc_type: "t", locale: Some("a."), market: Some(".b") };
        assert_eq!(joined.render(&vars).as_deref(), Some("/a..b/x"));
        let vars = RouteVars { locale: Some("."), market: Some("."), ..vars };
        assert_eq!(joined.render(&vars), None, "`.` + `.` would be `..`");
    }

    #[test]
    fn bad_templates_are_named() {
        for (text, got) in [
            ("blog/{slug}", "does not start"),
            ("/blog/{slug", "without its `}`"),
            ("/blog/slug}", "without its `{`"),
            ("/blog/{title}", "{title}"),
            ("//evil.example/{slug}", "not on the app's own origin"),
            ("/blog/../{slug}", "not on the app's own origin"),
            ("/blog/{slug} x", "not on the app's own origin"),
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
