//! Redaction of credentials in source URIs: `postgres://u:secret@h/db` → `postgres://u:***@h/db`.
//!
//! Every URI that reaches a log line, a status document, an error or `summary.json` goes through
//! [`redact_uri`].

/// Replaces the password of a `scheme://user:password@host…` URI with `***`, and the value of
/// any `password=` query parameter as well. Other URIs are returned unchanged.
pub fn redact_uri(uri: &str) -> String {
    let mut out = match uri.find("://") {
        Some(scheme_end) => {
            let rest_start = scheme_end + 3;
            let rest = &uri[rest_start..];
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let authority = &rest[..authority_end];
            match authority.rfind('@') {
                Some(at) => {
                    let userinfo = &authority[..at];
                    let user = userinfo.split(':').next().unwrap_or("");
                    let redacted = if userinfo.contains(':') { format!("{user}:***") } else { user.to_string() };
                    format!("{}{}{}", &uri[..rest_start], redacted, &rest[at..])
                }
                None => uri.to_string(),
            }
        }
        None => uri.to_string(),
    };
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let parts: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_string(),
            })
            .collect();
        out = format!("{head}{}", parts.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact_uri;

    #[test]
    fn passwords_are_replaced_and_the_rest_kept() {
        assert_eq!(
            redact_uri("postgres://kalla:s3cr@t@db:5432/kalla?table=invoices"),
            "postgres://kalla:***@db:5432/kalla?table=invoices"
        );
        assert_eq!(redact_uri("postgres://kalla@db/k?table=t"), "postgres://kalla@db/k?table=t");
        assert_eq!(redact_uri("postgres://h/db?table=t&password=x"), "postgres://h/db?table=t&password=***");
        assert_eq!(redact_uri("bank/2026-01.csv"), "bank/2026-01.csv");
    }
}
