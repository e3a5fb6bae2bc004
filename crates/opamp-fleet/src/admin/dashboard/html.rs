//! Escaping and the page frame shared by every dashboard page.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::session::Session;
use crate::time::Timestamp;

/// `text` escaped for HTML text and double-quoted attribute values.
pub(super) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` escaped for a URL query value.
pub(super) fn query_value(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A `<time>` element: relative text ("12s ago"), the exact UTC time as its tooltip.
pub(super) fn time(at: Timestamp) -> String {
    let millis = at.as_millis();
    if millis == 0 {
        return "—".to_owned();
    }
    let exact = humantime::format_rfc3339_millis(at.to_system_time()).to_string();
    format!(
        "<time datetime=\"{exact}\" title=\"{exact}\">{}</time>",
        at.relative_to(Timestamp::from(SystemTime::now()))
    )
}

/// Which navigation entry is current.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Nav {
    Fleet,
    Agents,
    Catalog,
    Rollouts,
    Audit,
}

/// A hidden CSRF field for a form of `session`.
pub(super) fn csrf_field(session: &Session) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&session.csrf)
    )
}

/// The whole page: head (own stylesheet and script only), navigation, `body`.
pub(super) fn page(title: &str, nav: Nav, session: &Session, body: &str) -> String {
    let mut links = String::new();
    for (entry, href, label) in [
        (Nav::Fleet, "/ui", "Fleet"),
        (Nav::Agents, "/ui/agents", "Agents"),
        (Nav::Catalog, "/ui/catalog", "Catalog"),
        (Nav::Rollouts, "/ui/rollouts", "Rollouts"),
        (Nav::Audit, "/ui/audit", "Audit log"),
    ] {
        let current = if entry == nav {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(links, "<a href=\"{href}\"{current}>{label}</a>");
    }
    let role = if session.read_only {
        " <span class=\"badge\">read-only</span>"
    } else {
        ""
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · opamp</title>\
         <link rel=\"stylesheet\" href=\"/ui/assets/style.css\">\
         <script src=\"/ui/assets/app.js\" defer></script></head>\
         <body><header><span class=\"brand\">opamp</span><nav>{links}</nav>\
         <span class=\"who\">{who}{role} <span id=\"live\" class=\"live\" title=\"live updates\"></span></span>\
         <form method=\"post\" action=\"/ui/logout\" class=\"inline\">{csrf}\
         <button type=\"submit\" class=\"link\">Log out</button></form></header>\
         <main><h1>{title}</h1>{body}</main></body></html>",
        title = esc(title),
        who = esc(&session.operator),
        csrf = csrf_field(session),
    )
}

/// A page without a session (login, errors before login).
pub(super) fn bare_page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · opamp</title>\
         <link rel=\"stylesheet\" href=\"/ui/assets/style.css\"></head>\
         <body class=\"bare\"><main><h1>{title}</h1>{body}</main></body></html>",
        title = esc(title),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_characters_are_escaped() {
        assert_eq!(
            esc("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }
}
