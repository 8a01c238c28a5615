//! Keeping secrets out of what we write: the Fly tokens and the shared secrets never reach a report, a log line
//! or an error, even when another party echoes them back (a 401 body quoting the token it refused).
//!
//! Scrubbing runs on the text as received, before anything shortens it: a cut token is still a secret. A Fly
//! token may be several macaroons joined by commas; each is a secret on its own. And an echo may be partial, so
//! any run of at least `MIN_ECHO` characters that starts a secret is redacted too.

use crate::http::Response;

/// Shortest start of a secret that counts as an echo of it.
pub const MIN_ECHO: usize = 12;
/// Secrets shorter than this are only redacted whole (a prefix would match too much ordinary text).
const MIN_SECRET: usize = 4;
pub const REDACTED: &str = "[redacted]";

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// `secrets`: shared secrets and tokens as configured; comma-joined tokens are split into their parts.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Redactor {
        let mut pieces: Vec<String> = Vec::new();
        for secret in secrets {
            let parts = std::iter::once(secret).chain(if secret.contains(',') { secret.split(',').collect() } else { vec![] });
            for part in parts.map(str::trim).filter(|p| p.chars().count() >= MIN_SECRET) {
                // Kept longest first, so a whole token is replaced before one of its parts could split it: each
                // piece goes in before the first shorter one (a handful of secrets: no sort needed).
                if !pieces.iter().any(|p| p == part) {
                    let at = pieces.iter().position(|p| p.len() < part.len()).unwrap_or(pieces.len());
                    pieces.insert(at, part.to_string());
                }
            }
        }
        Redactor { secrets: pieces }
    }

    /// `text` with every secret, and every echoed start of one, replaced by `[redacted]`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            out = scrub_one(&out, secret);
        }
        out
    }

    /// Scrub in place, only allocating when something is found.
    pub fn scrub_in_place(&self, text: &mut String) {
        if self.secrets.iter().any(|s| text.contains(probe(s))) {
            *text = self.scrub(text);
        }
    }

    /// Another party's words in an answer (an error body, a network message) with every secret redacted, before
    /// anything shortens or quotes them. A success's body is data, read as such, and left alone.
    pub fn scrub_response(&self, response: Response) -> Response {
        match response {
            Response::Http { status, headers, mut body } if !(200..300).contains(&status) => {
                self.scrub_in_place(&mut body);
                Response::Http { status, headers, body }
            }
            Response::Network { mut message } => {
                self.scrub_in_place(&mut message);
                Response::Network { message }
            }
            other => other,
        }
    }
}

/// The part of a secret whose presence means there may be something to redact: its first `MIN_ECHO`
/// characters, or all of it when it is shorter.
fn probe(secret: &str) -> &str {
    match secret.char_indices().nth(MIN_ECHO) {
        Some((cut, _)) => &secret[..cut],
        None => secret,
    }
}

/// Replace each occurrence of `secret`'s probe, extended as far as the text keeps matching the secret.
fn scrub_one(text: &str, secret: &str) -> String {
    let probe = probe(secret);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(probe) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let mut len = tail.bytes().zip(secret.bytes()).take_while(|(a, b)| a == b).count();
        while !tail.is_char_boundary(len) {
            len -= 1;
        }
        out.push_str(REDACTED);
        rest = &tail[len.max(probe.len())..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "fm2_lJPECAAAAAAAAMqHxBBvWhPBHz3Rv2cjwCR8hAsxwrVodHRwczovL2FwaS5mbHkuaW8vdjGWAJLOAAz,fm2_lJPETX3nUoLPtbuFW6k8c0xq";

    #[test]
    fn whole_secrets_and_each_macaroon_are_redacted() {
        let r = Redactor::new([TOKEN, "0123456789abcdef-sync"]);
        let (first, second) = TOKEN.split_once(',').unwrap();
        for text in [format!("bad token {TOKEN}"), format!("bad token {first}"), format!("second: {second}!"), "0123456789abcdef-sync".into()] {
            let clean = r.scrub(&text);
            assert!(clean.contains(REDACTED), "{text} → {clean}");
            assert!(!clean.contains(&first[..MIN_ECHO]) && !clean.contains(&second[..MIN_ECHO]) && !clean.contains("0123456789ab"), "{clean}");
        }
    }

    #[test]
    fn an_echoed_start_is_redacted_and_the_rest_kept() {
        let r = Redactor::new([TOKEN]);
        let cut = &TOKEN[..40];
        assert_eq!(r.scrub(&format!("401: token {cut}… is not valid")), "401: token [redacted]… is not valid");
        let short = &TOKEN[..MIN_ECHO - 1];
        assert_eq!(r.scrub(short), short, "too short to tell from ordinary text");
        assert_eq!(r.scrub("nothing here"), "nothing here");
        let mut s = format!("x{TOKEN}y{TOKEN}");
        r.scrub_in_place(&mut s);
        assert_eq!(s, "x[redacted]y[redacted]");
    }

    #[test]
    fn short_secrets_only_whole_and_unicode_is_safe() {
        let r = Redactor::new(["abcd", "ab", "éééééééééééééé"]);
        assert_eq!(r.scrub("xabcdx ab"), "x[redacted]x ab");
        assert_eq!(r.scrub("éééééééééééééà"), "[redacted]à", "a partial echo ending mid-character is cut on a boundary");
    }
}
